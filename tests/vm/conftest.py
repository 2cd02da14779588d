"""Per-kernel summary lines of the VM matrix at the end of the pytest run."""

SUMMARIES: list[str] = []


def pytest_terminal_summary(terminalreporter):
    if SUMMARIES:
        terminalreporter.section("VM kernel matrix")
        for line in SUMMARIES:
            terminalreporter.write_line(line)
