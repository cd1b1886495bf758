from daemon.cli import entry

# Guarded: ingest worker processes (daemon.workers, spawn) import this module again.
if __name__ == "__main__":
    entry()
