"""What the console prints on a real terminal (a pty): text stays text."""
import os
import pty
import subprocess
import sys


def test_brackets_in_messages_print_literally_on_a_terminal():
    script = ("from elearn.driver.console import Console\n"
              "c = Console()\n"
              "assert c._rich is not None, 'not a terminal'\n"
              "c.say('failed: [/x] and [b]bold[/b] stay as written')\n"
              "c.progress('k', 'waiting [/y]')\n"
              "c.done()\n")
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=follower, stdout=follower,
                            stderr=follower, env={**os.environ, "TERM": "xterm", "COLUMNS": "200"})
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the pty closes when the child exits
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(60) == 0, b"".join(chunks).decode(errors="replace")
    text = b"".join(chunks).decode(errors="replace")
    assert "failed: [/x] and [b]bold[/b] stay as written" in text, text
    assert "MarkupError" not in text
