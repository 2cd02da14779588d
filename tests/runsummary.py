"""Lines for the end of the pytest run, by section: what the VM kernel matrix and the
Debian node measured (docs quote these). tests/conftest.py prints them."""

SECTIONS: dict[str, list[str]] = {}


def note(section: str, line: str) -> None:
    SECTIONS.setdefault(section, []).append(line)
