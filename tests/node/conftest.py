"""What the node measured, at the end of the pytest run (the numbers docs/daemon.md quotes)."""

SUMMARIES: list[str] = []


def pytest_terminal_summary(terminalreporter):
    if SUMMARIES:
        terminalreporter.section("Debian node (systemd, the .deb)")
        for line in SUMMARIES:
            terminalreporter.write_line(line)
