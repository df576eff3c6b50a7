"""The `seedance-gateway` command, run as a real process on a fresh SQLite database."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.e2e.processes import clean_env

ROOT = Path(__file__).resolve().parents[1]


def run(
    *args: str, db: Path | None, cwd: Path = ROOT, stdin: str = "", **env_extra: str
) -> subprocess.CompletedProcess[str]:
    settings = {"GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{db}"} if db else {}
    env = clean_env(**settings, **env_extra)
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_users_and_keys_lifecycle(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    assert run("migrate", db=db).returncode == 0
    created = run("users", "create", "team-a", "--allowed-models", "m1,m2", db=db)
    assert created.returncode == 0, created.stderr
    user = json.loads(created.stdout)
    assert user["allowed_models"] == ["m1", "m2"]
    assert user["id"] in run("users", "list", db=db).stdout

    key = json.loads(run("keys", "create", "--user", user["id"], "--name", "ci", db=db).stdout)
    assert key["key"].startswith("sgw-")
    listing = run("keys", "list", "--user", user["id"], db=db).stdout
    assert key["id"] in listing and "active" in listing and key["key"] not in listing
    assert run("keys", "revoke", key["id"], db=db).returncode == 0
    assert "revoked" in run("keys", "list", "--user", user["id"], db=db).stdout


def test_errors_are_one_line_and_exit_nonzero(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    run("migrate", db=db)
    result = run("keys", "create", "--user", "usr_nobody", db=db)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: The user usr_nobody does not exist."


def test_prices_budgets_and_usage_report(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    run("migrate", db=db)
    listed = run("prices", "list", "--model", "seedance-1-0-pro-250528", db=db).stdout
    assert "2.5 USD/M tokens" in listed and "1.25 USD/M tokens" in listed  # seeded, flex at half
    assert run("prices", "set", "seedance-1-0-pro-250528", "3.1", db=db).returncode == 0
    assert (
        "3.1 USD/M tokens"
        in run("prices", "list", "--model", "seedance-1-0-pro-250528", db=db).stdout
    )
    user = json.loads(run("users", "create", "team-a", db=db).stdout)
    budget = run("budgets", "set", "--user", user["id"], "--limit", "50", db=db)
    assert budget.stdout.startswith(f"budget user:{user['id']}: monthly, limit 50")
    report = run("usage", "report", "--by", "model", "--csv", db=db)
    assert report.stdout.splitlines()[0].startswith("model,currency,tasks,settled_tasks")
    by_user = run("usage", "report", "--by", "user", "--since", "2026-11-01", db=db)
    assert by_user.returncode == 0 and by_user.stdout.split()[:2] == ["user", "name"]
    bad_date = run("usage", "report", "--since", "yesterday", db=db)
    assert bad_date.returncode == 2 and "expected a date" in bad_date.stderr
    listed = run("budgets", "list", db=db).stdout
    assert listed.startswith(f"user:{user['id']}\tmonthly\tlimit 50")
    assert run("budgets", "delete", "--user", user["id"], db=db).returncode == 0
    assert run("budgets", "list", db=db).stdout == ""
    again = run("budgets", "delete", "--user", user["id"], db=db)
    assert again.returncode == 1 and again.stderr.startswith("error: There is no budget")


def test_limit_overrides(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    run("migrate", db=db)
    user = json.loads(run("users", "create", "team-a", db=db).stdout)
    shown = json.loads(
        run(
            "users",
            "limits",
            user["id"],
            "--create-rate",
            "5/minute",
            "--max-in-flight",
            "2",
            db=db,
        ).stdout
    )
    assert (shown["create_rate_limit"], shown["max_tasks_in_flight"]) == ("5/minute", 2)
    reset = json.loads(run("users", "limits", user["id"], "--create-rate", "default", db=db).stdout)
    assert reset["create_rate_limit"] is None and reset["max_tasks_in_flight"] == 2
    key = json.loads(run("keys", "create", "--user", user["id"], db=db).stdout)
    assert (
        json.loads(run("keys", "limits", key["id"], "--read-rate", "9/second", db=db).stdout)[
            "read_rate_limit"
        ]
        == "9/second"
    )
    bad = run("keys", "limits", key["id"], "--read-rate", "lots", db=db)
    assert bad.returncode != 0 and "read_rate_limit" in bad.stderr


def test_env_example_copied_verbatim_starts(tmp_path: Path) -> None:
    """`.env.example` says to copy it to `.env`: done as it says, the CLI runs in demo mode."""
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    for args in (["migrate"], ["users", "list"]):
        result = run(*args, db=None, cwd=tmp_path, PYTHONPATH=str(ROOT))
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "gateway.db").exists()  # the example's SQLite file, beside the .env


def test_plans_and_quotes(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    run("migrate", db=db)
    listed = run("prices", "list", "--model", "dreamina-seedance-2-0-260128", db=db).stdout
    assert (
        "resolution=1080p video_input=yes audio=* draft=*\t4.6 USD/M tokens (approximate)" in listed
    )
    user = json.loads(run("users", "create", "team-a", db=db).stdout)
    plan = run("plans", "create", "retail", "--multiplier", "1.25", db=db)
    assert plan.stdout.startswith("plan 1: retail, cost × 1.25"), plan.stderr
    assert run("plans", "assign", user["id"], "1", db=db).returncode == 0
    body = tmp_path / "body.json"
    body.write_text(
        json.dumps(
            {
                "model": "dreamina-seedance-2-0-260128",
                "resolution": "720p",
                "ratio": "16:9",
                "content": [{"type": "text", "text": "fox"}],
            }
        )
    )
    at_cost = json.loads(run("quote", str(body), db=db).stdout)
    assert (at_cost["estimated_tokens"], at_cost["estimated_cost"]) == (108_900, "0.7623")
    retail = json.loads(run("quote", str(body), "--user", user["id"], db=db).stdout)
    assert retail["estimated_charge"] == "0.952875"  # 762,300 × 1.25 micro-units
    body.write_text(json.dumps({"model": "dreamina-seedance-2-0-260128", "duration": 99}))
    bad = run("quote", str(body), db=db)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ")


def test_accounts_are_managed_and_their_keys_never_printed(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    run("migrate", db=db)
    secret = {"GATEWAY_ACCOUNT_KEYS_SECRET": "cli-accounts-secret-0123456789"}
    key = "byteplus-key-" + "7" * 24
    added = run(
        "accounts", "add", "bp", "https://ark.example.test/api/v3",
        "--weight", "3", "--models", "m1,m2=m2-own", db=db, stdin=key + "\n", **secret,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    shown = json.loads(added.stdout)
    assert (shown["weight"], shown["models"]) == (3, {"m1": "m1", "m2": "m2-own"})
    assert shown["key_stored"] is True and key not in added.stdout + added.stderr
    assert run("accounts", "drain", "bp", db=db).returncode == 0
    changed = run("accounts", "set", "bp", "--lists-per-second", "2", "--models", "all", db=db)
    assert json.loads(changed.stdout)["models"] is None
    listed = run("accounts", "list", db=db).stdout
    assert "bp\tdraining\thealthy" in listed and "lists_per_second=2" in listed
    rotated = run("accounts", "rotate-key", "bp", db=db, stdin="new-" + key + "\n", **secret)
    assert rotated.returncode == 0 and "new-" + key not in rotated.stdout + rotated.stderr
    stored = sqlite3.connect(db).execute("select key_ciphertext from upstream_accounts").fetchall()
    assert key not in repr(stored) and all(
        row[0] is None or row[0][:5] == "gAAAA" for row in stored
    )
    # Without the secret a key cannot be stored; a bad limit is refused before anything is.
    no_secret = run("accounts", "add", "x", "https://x.test/api/v3", db=db, stdin=key + "\n")
    assert no_secret.returncode == 1 and "GATEWAY_ACCOUNT_KEYS_SECRET" in no_secret.stderr
    bad = run("accounts", "set", "bp", "--weight", "-1", db=db)
    assert bad.returncode == 1 and bad.stderr.startswith("error: weight")


def test_keys_are_rotated_expired_fenced_and_listed_when_expiring(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    run("migrate", db=db)
    user = json.loads(run("users", "create", "team-k", db=db).stdout)
    key = json.loads(run("keys", "create", "--user", user["id"], db=db).stdout)
    rotated = run("keys", "rotate", key["id"], "--grace", "3600", db=db)
    shown = json.loads(rotated.stdout)
    assert shown["id"] == key["id"] and shown["key"] != key["key"]
    assert shown["previous_prefix"] == key["prefix"] and "not shown again" in rotated.stderr
    listed = run("keys", "expiring", "--days", "1", db=db).stdout
    assert key["id"] in listed  # its former secret ends within the day
    expired = run("keys", "expire", key["id"], "--at", "2099-01-01T00:00:00Z", db=db)
    assert json.loads(expired.stdout)["expires_at"].startswith("2099-01-01")
    past = run("keys", "expire", key["id"], "--at", "2001-01-01T00:00:00Z", db=db)
    assert past.returncode != 0 and "future" in past.stderr
    fenced = run("keys", "networks", key["id"], "10.0.0.0/8,192.168.1.7", db=db)
    assert json.loads(fenced.stdout)["allowed_networks"] == ["10.0.0.0/8", "192.168.1.7/32"]
    bad = run("keys", "networks", key["id"], "10.0.0.0/99", db=db)
    assert bad.returncode != 0 and bad.stderr.startswith("error: allowed_networks")
    anywhere = run("keys", "networks", key["id"], "any", db=db)
    assert json.loads(anywhere.stdout)["allowed_networks"] is None
