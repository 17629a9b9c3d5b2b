"""``python -m bigbunny`` = the ``bbd`` command, reached through its console-script entry point (the
shared core does not import the daemon that the entry point lives beside)."""

from importlib.metadata import distribution

if __name__ == "__main__":
    # this distribution's own script: another package may also install a "bbd"
    (bbd,) = distribution("bigbunny").entry_points.select(group="console_scripts", name="bbd")
    bbd.load()()
