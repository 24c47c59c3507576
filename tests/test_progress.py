"""Progress bars show on a terminal only, and only when enabled."""

import os

from sifar.progress import progress_bar


def test_a_bar_shows_on_a_terminal_only_when_enabled(tmp_path):
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as terminal, open(tmp_path / "log", "w") as log:
        assert not progress_bar(range(3), file=terminal).disable
        assert progress_bar(range(3), enabled=False, file=terminal).disable
        assert progress_bar(range(3), file=log).disable  # a log file or a pipe stays clean
    os.close(leader)
