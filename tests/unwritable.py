"""A folder no process can create, not even root's: for "cannot write there" tests."""

import os

import pytest


def sysfs_folder(name: str) -> str:
    """`/sys/<name>` (sysfs takes no new folders); skips where /sys is absent or takes them."""
    folder = f"/sys/{name}"
    try:
        os.mkdir(folder)
        os.rmdir(folder)
        pytest.skip("/sys takes new folders here")
    except FileNotFoundError:
        pytest.skip("no /sys here")
    except OSError:
        pass
    return folder
