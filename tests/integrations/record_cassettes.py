"""Re-record tests/integrations/cassettes/ from the real local stack.

    python tests/integrations/record_cassettes.py

Starts the local stack (proxy + local backend + model) in this process, runs every scenario of
cassette_scenarios.py against it with vcrpy recording, and rewrites the stack's random URL to
the default proxy URL so the replay tests need no server. Commit the cassettes it writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cassette_scenarios import CASSETTES, SCENARIOS, make_vcr
from privatemode_proxy._stack import LocalStack


def main() -> None:
    CASSETTES.mkdir(exist_ok=True)
    with LocalStack() as stack:
        recorder = make_vcr("all", recorded_base_url=stack.base_url)
        for name, scenario in SCENARIOS.items():
            path = CASSETTES / f"{name}.yaml"
            path.unlink(missing_ok=True)
            with recorder.use_cassette(path.name) as cassette:
                scenario(stack.base_url)
            print(f"{path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}:"
                  f" {len(cassette)} requests")


if __name__ == "__main__":
    main()
