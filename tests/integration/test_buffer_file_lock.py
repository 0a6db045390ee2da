"""The buffer file's lock against a second, real process (the ``held_buffer_file``
fixture holds it from a child interpreter). The file's other rules are in
tests/unit/test_buffer_file.py."""

from __future__ import annotations

import pytest

from conftest import HeldFile
from self_improve.buffer.checkpoint import BufferFile


def test_a_second_process_cannot_write_the_same_buffer_file_until_the_first_dies(
        held_buffer_file: HeldFile) -> None:
    with pytest.raises(ValueError, match="buffer_path: .*another process"):
        BufferFile(str(held_buffer_file.path)).claim()
    held_buffer_file.release()
    BufferFile(str(held_buffer_file.path)).claim()
