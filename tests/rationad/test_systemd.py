from rationad.systemd import Notifier


def test_a_status_carrying_a_server_s_error_body_stays_one_assignment():
    """Found in the re-read of 5c820eb, failing before its fix: STATUS= now carries why the daemon is not ready, which
    may hold a model server's error body; a newline in it started another assignment (READY=1, MAINPID=, STOPPING=1)
    that systemd would take from the daemon."""
    sent: list[str] = []
    n = Notifier()
    n._send = sent.append
    n.status("running, not ready: model rejects every request: HTTP 400: <html>\nREADY=1\r\nMAINPID=1\n" + "x" * 500)
    [line] = sent
    assert "\n" not in line and "\r" not in line and line.startswith("STATUS=running, not ready: model rejects")
    assert len(line) <= len("STATUS=") + 300
