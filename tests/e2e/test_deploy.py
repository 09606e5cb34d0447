"""`./deploy.sh` for real, under load: a new commit with a migration, three releases that must
not get traffic (a failing migration, a crash at start, readiness that never passes), a
rollback, and a SIGKILL of one of the two app containers.

16 clients read and write through nginx the whole time (5 s client timeout). Each phase is a
window of the run; its figures (failures by kind, the longest gap without a success) go in the
table printed at the end of `make e2e`. Every figure is gathered before anything is asserted, so
a failing phase still shows the whole table.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from tests.e2e.load import LoadGenerator, Outcome, WindowStats, format_table, seed_users
from tests.e2e.stack import DeployRun, Stack

pytestmark = pytest.mark.e2e

CLIENTS = 16
# After an operation: requests it may have slowed down finish inside its window.
SETTLE_SECONDS = 3.0
NEW_COLUMN = "e2e_note"

MIGRATION = '''"""e2e: an expand step, a nullable column the previous release ignores"""

import sqlalchemy as sa

from alembic import op

revision = "e2e00000c01a"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("{column}", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("users", "{column}")
'''


@dataclass
class Phase:
    name: str
    stats: WindowStats
    seconds: float | None
    run: DeployRun | None = None
    notes: list[str] = field(default_factory=list)


def alembic_head(stack: Stack) -> str:
    config = Config(str(stack.workdir / "alembic.ini"))
    config.set_main_option("script_location", str(stack.workdir / "alembic"))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head, "the migration chain has no head"
    return head


def adds_a_column(head: str) -> str:
    return MIGRATION.format(head=head, column=NEW_COLUMN)


def failing_migration(_: str) -> str:
    return (
        '"""e2e: a migration that fails half-way (its transaction rolls back)"""\n\n'
        "from alembic import op\n\n"
        'revision = "e2e00000c02b"\n'
        'down_revision = "e2e00000c01a"\n'
        "branch_labels = None\n"
        "depends_on = None\n\n\n"
        "def upgrade() -> None:\n"
        '    op.execute("CREATE TABLE e2e_half_done (id int)")\n'
        '    raise RuntimeError("e2e: this migration fails")\n\n\n'
        "def downgrade() -> None:\n"
        "    pass\n"
    )


def crash_at_start(source: str) -> str:
    return source + '\nraise RuntimeError("e2e: this release crashes at start")\n'


def never_ready(source: str) -> str:
    marker = "    if resources.draining:\n"
    patched = source.replace(marker, "    if True:  # e2e: this release is never ready\n", 1)
    assert patched != source, "readiness changed shape: update the e2e release that breaks it"
    return patched


FAILED_RELEASES = (
    # label, file, edit, what deploy.sh must say
    (
        "failed-migration",
        "alembic/versions/2026_12_06_0001-e2e00000c02b_fails.py",
        failing_migration,
        "migrations failed",
    ),
    ("crash-at-start", "app/main.py", crash_at_start, "crashed at start"),
    ("never-ready", "app/api/health.py", never_ready, "not ready after"),
)


def serving_version(stack: Stack) -> str:
    response = httpx.get(f"{stack.base_url}/health", timeout=5)
    response.raise_for_status()
    return str(response.json()["version"])


def tags(stack: Stack) -> set[str]:
    return {container.tag for container in stack.app_containers()}


def table_exists(stack: Stack, table: str) -> bool:
    return (
        stack.psql(f"SELECT 1 FROM information_schema.tables WHERE table_name = '{table}'") == "1"
    )


def column_exists(stack: Stack) -> bool:
    found = stack.psql(
        "SELECT 1 FROM information_schema.columns "
        f"WHERE table_name = 'users' AND column_name = '{NEW_COLUMN}'"
    )
    return found == "1"


def deploy_phase(load: LoadGenerator, stack: Stack, name: str, *args: str) -> Phase:
    """`./deploy.sh ARGS` as one window of the load: from its start until it returned and the
    requests it may have slowed down had time to finish."""
    load.mark(f"{name}:start")
    run = stack.deploy(*args, label=name)
    time.sleep(SETTLE_SECONDS)
    load.mark(f"{name}:end")
    return Phase(name, load.window(f"{name}:start", f"{name}:end"), run.seconds, run)


def kill_one_app_container(stack: Stack, load: LoadGenerator) -> Phase:
    """SIGKILL the main process of one app container (a crash, not a `docker stop`), then wait
    for Docker to restart it and for it to be healthy again.

    The kill is not instant: the container's processes die a few milliseconds after the signal
    is sent. Docker's record of when the container stopped (State.FinishedAt) marks the moment
    it was gone; a request sent after that must not fail (nginx fails over to the other one),
    and the requests that did fail must have been in flight at that moment."""
    victim = stack.app_containers()[0]
    load.mark("sigkill:start")
    wall_offset = time.time() - time.monotonic()
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    back = False
    while not back and time.monotonic() < killed_at + 90:
        time.sleep(0.5)
        now = {container.id: container for container in stack.app_containers()}
        again = now.get(victim.id)
        back = bool(again and again.restarts > victim.restarts and again.health == "healthy")
    seconds = time.monotonic() - killed_at
    time.sleep(SETTLE_SECONDS)
    ended = load.mark("sigkill:end")
    gone_at = stopped_at(stack, victim.id) - wall_offset
    outcomes = load.outcomes()
    # In flight while it died: from the signal until Docker saw the container gone.
    dying = [o for o in outcomes if o.started <= gone_at and o.ended >= killed_at]
    after = [o for o in outcomes if gone_at < o.started and o.ended <= ended]
    phase = Phase(
        "sigkill 1 of 2 app containers", load.window("sigkill:start", "sigkill:end"), seconds
    )
    phase.notes += [
        f"back and healthy: {back} after {seconds:.1f}s",
        f"container gone {1000 * (gone_at - killed_at):.0f} ms after the signal",
        f"requests in flight while it died, on both containers: {len(dying)}",
        f"of them failed: {len(failed(dying))}",
        f"failed requests sent after it was gone: {len(failed(after))}",
    ]
    return phase


def stopped_at(stack: Stack, container: str) -> float:
    """When Docker saw the container's last exit (State.FinishedAt), in seconds since the epoch."""
    finished = str(stack.inspect(container)["State"]["FinishedAt"])
    whole, _, fraction = finished.rstrip("Z").partition(".")
    moment = datetime.fromisoformat(whole).replace(tzinfo=UTC)
    return moment.timestamp() + float(f"0.{fraction or 0}")


def failed(outcomes: Iterable[Outcome]) -> list[Outcome]:
    return [outcome for outcome in outcomes if not outcome.succeeded]


def test_releases_roll_out_under_load(stack: Stack, report: list[str]) -> None:
    initial = stack.head()
    users = asyncio.run(seed_users(stack.base_url, CLIENTS))
    load = LoadGenerator(stack.base_url, users, clients=CLIENTS).start()
    phases: list[Phase] = []
    checks: dict[str, bool] = {}
    kill: Phase | None = None
    try:
        time.sleep(5)
        load.mark("steady:end")
        phases.append(Phase("steady load", load.window("start", "steady:end"), None))

        # (a) a new commit whose migration adds a column (an expand step).
        migration = f"alembic/versions/2026_12_06_0000-e2e00000c01a_{NEW_COLUMN}.py"
        head = alembic_head(stack)
        release = stack.commit("e2e: add a column", {migration: lambda _: adds_a_column(head)})
        phase = deploy_phase(load, stack, "new-commit", "production")
        phases.append(phase)
        checks |= {
            "new commit: deploy.sh exits 0": phase.run is not None and phase.run.returncode == 0,
            "new commit: only its tag serves": tags(stack) == {release},
            "new commit: 2 app containers": len(stack.app_containers()) == 2,
            "new commit: /health reports its tag": serving_version(stack) == release,
            "new commit: the column exists": column_exists(stack),
        }

        # (b, c, d) releases that must get no traffic; the serving one stays.
        for label, path, edit, expected in FAILED_RELEASES:
            stack.commit(f"e2e: a release that fails ({label})", {path: edit})
            phase = deploy_phase(load, stack, label, "production")
            phases.append(phase)
            output = phase.run.output if phase.run else ""
            checks |= {
                f"{label}: deploy.sh exits non-zero": phase.run is not None
                and phase.run.returncode != 0,
                f"{label}: it says {expected!r}": expected in output,
                f"{label}: the previous tag keeps serving": tags(stack) == {release},
                f"{label}: /health reports the previous tag": serving_version(stack) == release,
            }
            stack.drop_last_commit()
        checks["failed-migration: its transaction rolled back"] = not table_exists(
            stack, "e2e_half_done"
        )

        # (e) ./deploy.sh rollback to the first release, which ignores the new column.
        phase = deploy_phase(load, stack, "rollback", "rollback")
        phases.append(phase)
        checks |= {
            "rollback: deploy.sh exits 0": phase.run is not None and phase.run.returncode == 0,
            "rollback: the first tag serves": tags(stack) == {initial},
            "rollback: /health reports it": serving_version(stack) == initial,
        }

        # (f) SIGKILL one of the two app containers.
        kill = kill_one_app_container(stack, load)
        phases.append(kill)
    finally:
        load.stop()
        phases.append(Phase("whole run", load.stats(), None))
        report.extend(summary(stack.runs[0], phases))

    assert [name for name, ok in checks.items() if not ok] == []
    for phase in phases:
        if phase is not kill and phase.name != "whole run":
            assert phase.stats.failed == 0, (phase.name, phase.stats)
    assert kill is not None
    assert kill.notes[0].startswith("back and healthy: True"), kill.notes
    # A crash costs at most the requests in flight on the crashed container: every failure of
    # the phase was in flight while it died, and nothing sent after that failed.
    in_flight_failures = int(kill.notes[3].rsplit(" ", 1)[1])
    assert kill.stats.failed == in_flight_failures, kill.notes
    assert kill.notes[4].endswith(": 0"), kill.notes


def steps(run: DeployRun) -> str:
    return ", ".join(f"{n}: {s:.1f}s" for n, s in sorted(run.steps.items())) or "-"


def summary(first: DeployRun, phases: list[Phase]) -> list[str]:
    lines = [format_table([(phase.name, phase.stats, phase.seconds) for phase in phases])]
    lines.append(
        f"first deploy, from a clean state, no load: {first.seconds:.1f}s; steps {steps(first)}"
    )
    for phase in phases:
        if phase.run is not None:
            lines.append(f"{phase.name}: exit {phase.run.returncode}; steps {steps(phase.run)}")
        lines += [f"{phase.name}: {note}" for note in phase.notes]
        lines += [f"{phase.name}: failed {example}" for example in phase.stats.examples]
    return lines
