"""The console over HTTP: sign-in and its throttle, session cookies that expire and cannot be
forged, CSRF on every form, admin pages closed to users, escaped text, costs that add up."""

from __future__ import annotations

import re
import time

import httpx

from app.console.session import COOKIE
from tests.conftest import ADMIN_TOKEN, Gateway
from tests.helpers import TASKS, body, database_rows

HTML = "text/html"


def browser(gateway: Gateway) -> httpx.AsyncClient:
    """A client that keeps cookies and does not follow redirects, like a page's forms."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway.app), base_url="http://gateway.test"
    )


async def signed_in(gateway: Gateway, credential: str) -> tuple[httpx.AsyncClient, str]:
    client = browser(gateway)
    answer = await client.post("/console/login", data={"credential": credential})
    assert answer.status_code == 303, answer.text
    page = await client.get("/console/my" if credential != ADMIN_TOKEN else "/console")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    return client, csrf.group(1)


async def test_sign_in_sets_a_strict_expiring_cookie_and_sign_out_drops_it(
    gateway: Gateway,
) -> None:
    client = browser(gateway)
    assert (await client.get("/console")).headers["location"] == "/console/login"
    answer = await client.post("/console/login", data={"credential": ADMIN_TOKEN})
    cookie = answer.headers["set-cookie"].lower()
    assert cookie.startswith(f"{COOKIE}=")
    assert "httponly" in cookie and "samesite=strict" in cookie and "max-age=28800" in cookie
    overview = await client.get("/console")
    assert overview.status_code == 200 and "Overview" in overview.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', overview.text).group(1)  # type: ignore[union-attr]
    out = await client.post("/console/logout", data={"csrf": csrf})
    assert out.status_code == 303 and "max-age=0" in out.headers["set-cookie"].lower()
    client.cookies.clear()
    assert (await client.get("/console")).status_code == 303


async def test_failed_sign_ins_count_towards_the_throttle(make_gateway) -> None:
    gateway: Gateway = await make_gateway(auth_failure_limit="3/minute")
    client = browser(gateway)
    before = await database_rows(gateway.app)
    codes = [
        (await client.post("/console/login", data={"credential": f"sgw-wrong{n}"})).status_code
        for n in range(5)
    ]
    assert codes[:3] == [401, 401, 401] and 429 in codes[3:]
    assert await database_rows(gateway.app) == before


async def test_forms_need_their_csrf_token(gateway: Gateway) -> None:
    client, csrf = await signed_in(gateway, ADMIN_TOKEN)
    before = await database_rows(gateway.app)
    for sent in ({"name": "mallory"}, {"name": "mallory", "csrf": "forged"}):
        assert (await client.post("/console/users", data=sent)).status_code in (400, 403)
    other_site = {"Origin": "https://evil.example"}
    refused = await client.post(
        "/console/users", data={"name": "m", "csrf": csrf}, headers=other_site
    )
    assert refused.status_code == 403
    assert await database_rows(gateway.app) == before

    made = await client.post("/console/users", data={"name": "carol", "csrf": csrf})
    assert made.status_code == 303
    audit = (
        await gateway.client.get(
            "/admin/v1/audit", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
    ).json()
    assert audit[0]["actor"] == "console:admin" and audit[0]["after"]["name"] == "carol"


async def test_forged_altered_and_expired_sessions_are_signed_out(gateway: Gateway) -> None:
    client, _ = await signed_in(gateway, ADMIN_TOKEN)
    sealed = client.cookies[COOKIE]
    signer = gateway.app.state.resources.token_signer
    payload = signer.unseal(sealed)
    expired = signer.seal({**payload, "e": int(time.time()) - 1})
    body_part, kid, mac = sealed.split(".")
    altered = f"{body_part[:-2]}xx.{kid}.{mac}"
    for cookie in (expired, altered, "not-a-session", f"{body_part}.{kid}.{'0' * 64}"):
        visitor = browser(gateway)
        visitor.cookies.set(COOKIE, cookie)
        assert (await visitor.get("/console")).headers.get("location") == "/console/login"


async def test_a_users_session_sees_only_its_own_and_no_admin_page(gateway: Gateway) -> None:
    alice_user = await gateway.create_user("alice")
    alice_key = await gateway.create_key(alice_user["id"])
    bob = await gateway.user_client("bob")
    mine = (await gateway.as_user(alice_key).post(TASKS, json=body())).json()["id"]
    theirs = (await bob.post(TASKS, json=body())).json()["id"]
    client, _ = await signed_in(gateway, alice_key)
    page = await client.get("/console/my")
    assert mine in page.text and theirs not in page.text
    for path in ("/console/users", "/console/costs", "/console/audit", "/console/costs.csv"):
        assert (await client.get(path)).status_code == 403, path
    assert (await client.get(f"/console/my/tasks/{theirs}/video")).status_code == 404
    video = await client.get(f"/console/my/tasks/{mine}/video", headers={"Range": "bytes=0-9"})
    assert video.status_code == 206 and len(video.content) == 10


async def test_revoking_the_key_signs_its_session_out(gateway: Gateway, admin_headers) -> None:
    user = await gateway.create_user("alice")
    key = await gateway.create_key(user["id"])
    client, _ = await signed_in(gateway, key)
    keys = (
        await gateway.client.get(f"/admin/v1/users/{user['id']}/keys", headers=admin_headers)
    ).json()
    await gateway.client.delete(f"/admin/v1/keys/{keys[0]['id']}", headers=admin_headers)
    assert (await client.get("/console/my")).headers.get("location") == "/console/login"


async def test_text_people_chose_is_escaped(gateway: Gateway) -> None:
    evil = '<script>alert("x")</script>'
    user = await gateway.create_user(evil)
    await gateway.create_key(user["id"], name='<img src=x onerror="alert(1)">')
    client, _ = await signed_in(gateway, ADMIN_TOKEN)
    for path in ("/console/users", f"/console/users/{user['id']}", "/console/audit"):
        page = await client.get(path)
        assert "<script>alert" not in page.text and "<img src=x" not in page.text, path
        assert "&lt;script&gt;" in page.text or "\\u003cscript\\u003e" in page.text, path


async def test_the_costs_page_and_its_csv_add_up_to_the_ledger(
    gateway: Gateway, admin_headers
) -> None:
    client_api = await gateway.user_client("alice")
    for n in range(3):
        task_id = (await client_api.post(TASKS, json=body(f"fox {n}"))).json()["id"]
        await client_api.get(f"{TASKS}/{task_id}")
    report = (
        await gateway.client.get(
            "/admin/v1/usage", params={"group_by": "model"}, headers=admin_headers
        )
    ).json()
    total = sum(int(row["cost_micros"]) for row in report["rows"])
    client, _ = await signed_in(gateway, ADMIN_TOKEN)
    page = await client.get("/console/costs")
    assert page.status_code == 200 and "chart.umd.min.js" in page.text
    csv = (await client.get("/console/costs.csv")).text.splitlines()
    assert csv[0] == "day,model,name,currency,cost,cost_micros,tokens"
    assert sum(int(line.split(",")[5]) for line in csv[1:]) == total > 0


async def test_without_a_secret_to_seal_sessions_the_console_is_off(make_gateway) -> None:
    admin = await make_gateway()
    key = await admin.create_key((await admin.create_user("alice"))["id"])
    without = await make_gateway(admin_token=None)
    answer = await browser(without).post("/console/login", data={"credential": key})
    assert answer.status_code == 403 and "console is off" in answer.text
    assert "set-cookie" not in answer.headers


async def test_the_task_explorer_filters_and_a_task_shows_its_timeline(gateway: Gateway) -> None:
    alice = await gateway.user_client("alice")
    bob = await gateway.user_client("bob")
    failed = (await alice.post(TASKS, json=body("fox [sim:fail]"))).json()["id"]
    await alice.get(f"{TASKS}/{failed}")
    done = (await bob.post(TASKS, json=body("fox"))).json()["id"]
    await bob.get(f"{TASKS}/{done}")
    client, _ = await signed_in(gateway, ADMIN_TOKEN)

    listed = await client.get("/console/tasks", params={"status": "failed"})
    assert failed in listed.text and done not in listed.text
    everyone = await client.get("/console/tasks", params={"from": "2020-01-01", "to": "2099-12-31"})
    assert failed in everyone.text and done in everyone.text

    page = await client.get(f"/console/tasks/{failed}")
    steps = re.findall(r'<td class="what">([^<]+)</td>', page.text)
    assert steps[0] == "created" and steps[1] == "ledger reserve"
    assert "status" in steps and steps[-1] == "ledger release"
    moves = re.findall(r'<td class="what">status</td>\s*<td>([^<]+)</td>', page.text)
    assert moves[0] == "submitting → queued", moves
    assert "OutputVideoSensitiveContentDetected" in page.text  # the failure's code
    assert (await client.get("/console/tasks/cgt-nope")).status_code == 404


async def test_budgets_limits_and_prices_are_set_from_the_console(
    gateway: Gateway, admin_headers
) -> None:
    user = await gateway.create_user("alice")
    client, csrf = await signed_in(gateway, ADMIN_TOKEN)
    page = f"/console/users/{user['id']}"
    budget = {"csrf": csrf, "period": "daily", "limit": "12.50", "alert_percents": "80,50"}
    assert (await client.post(f"{page}/budget", data=budget)).status_code == 303
    limits = {"csrf": csrf, "create_rate_limit": "5/minute", "max_tasks_in_flight": "3"}
    assert (await client.post(f"{page}/limits", data=limits)).status_code == 303
    price = {
        "csrf": csrf,
        "model": "seedance-1-0-lite-t2v-250428",
        "price_per_million_tokens": "1.2",
        "resolution": "1080p",
    }
    assert (await client.post("/console/prices", data=price)).status_code == 303

    admin = {"headers": admin_headers}
    (set_budget,) = (
        await gateway.client.get(f"/admin/v1/users/{user['id']}/budgets", **admin)
    ).json()
    assert (set_budget["period"], set_budget["limit_micros"]) == ("daily", 12_500_000)
    assert set_budget["alert_percents"] == [50, 80]
    shown = (await gateway.client.get(f"/admin/v1/users/{user['id']}", **admin)).json()
    assert (shown["create_rate_limit"], shown["max_tasks_in_flight"]) == ("5/minute", 3)
    assert shown["read_rate_limit"] is None  # empty: the default
    listed = (await gateway.client.get("/admin/v1/prices", **admin)).json()
    assert any(
        p["model"] == price["model"]
        and (p["micros_per_million_tokens"], p["resolution"], p["audio"])
        == (1_200_000, "1080p", "*")
        for p in listed
    )
    assert (
        "12.50" in (await client.get(page)).text
        and "1.20" in (await client.get("/console/prices")).text
    )

    before = await database_rows(gateway.app)
    bad = [
        (f"{page}/budget", {"csrf": csrf, "limit_tokens": "lots"}),
        (f"{page}/limits", {"csrf": csrf, "create_rate_limit": "often"}),
        ("/console/prices", {"csrf": csrf, "model": "m", "price_per_million_tokens": "-1"}),
        (
            "/console/prices",
            {"csrf": csrf, "model": "m", "price_per_million_tokens": "1", "resolution": "8k"},
        ),
        (f"{page}/budget", {"limit": "1"}),  # no CSRF token
    ]
    for path, form in bad:
        assert (await client.post(path, data=form)).status_code in (400, 403), path
    assert await database_rows(gateway.app) == before
    assert (await client.post(f"{page}/budget/delete", data={"csrf": csrf})).status_code == 303
    assert (await gateway.client.get(f"/admin/v1/users/{user['id']}/budgets", **admin)).json() == []


async def test_users_manage_their_own_keys_only_when_allowed(make_gateway) -> None:
    closed: Gateway = await make_gateway()
    key = await closed.create_key((await closed.create_user("alice"))["id"])
    client, csrf = await signed_in(closed, key)
    assert (await client.get("/console/my/keys")).status_code == 403
    assert (await client.post("/console/my/keys", data={"csrf": csrf})).status_code == 403

    gateway: Gateway = await make_gateway(console_user_keys=True)
    bob = await gateway.create_user("bob")
    bobs_key = await gateway.create_key(bob["id"])
    client, csrf = await signed_in(gateway, key)
    made = await client.post("/console/my/keys", data={"csrf": csrf, "name": "laptop"})
    new_key = re.search(r'id="new-key">([^<]+)<', made.text).group(1)  # type: ignore[union-attr]
    assert (await gateway.as_user(new_key).get(TASKS)).status_code == 200
    page = await client.get("/console/my/keys")
    assert page.text.count('class="state"') == 2  # alice's two keys, not bob's
    listing = f"/admin/v1/users/{bob['id']}/keys"
    bob_keys = (
        await gateway.client.get(listing, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    ).json()
    refused = await client.post(f"/console/my/keys/{bob_keys[0]['id']}/revoke", data={"csrf": csrf})
    assert refused.status_code == 404
    assert (await gateway.as_user(bobs_key).get(TASKS)).status_code == 200
    mine = re.findall(r'action="/console/my/keys/([^/]+)/revoke"', page.text)
    session_key = signer_key_id(client, gateway)
    for key_id in sorted(mine, key=lambda k: k == session_key):  # the session's own key last
        answer = await client.post(f"/console/my/keys/{key_id}/revoke", data={"csrf": csrf})
        assert answer.status_code == 303
    assert (await gateway.as_user(new_key).get(TASKS)).status_code == 401
    assert (await client.get("/console/my")).headers.get("location") == "/console/login"
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    audit = (await gateway.client.get("/admin/v1/audit", headers=admin)).json()
    by_user = [(e["action"], e["entity"]) for e in audit if e["actor"].startswith("console:user:")]
    assert sorted(by_user) == [("create", "key"), ("update", "key"), ("update", "key")]


def signer_key_id(client: httpx.AsyncClient, gateway: Gateway) -> str:
    """The key a console session was signed in with (read from its sealed cookie)."""
    payload = gateway.app.state.resources.token_signer.unseal(client.cookies[COOKIE])
    return str(payload["k"])


async def test_a_new_admin_token_signs_every_admin_out(make_gateway) -> None:
    secrets = {"browser_token_secrets": ["console-test-secret-0123456789abcdef"]}
    before: Gateway = await make_gateway(**secrets)
    client, _ = await signed_in(before, ADMIN_TOKEN)
    after: Gateway = await make_gateway(**secrets, admin_token="a-brand-new-admin-token-0123")
    visitor = browser(after)
    visitor.cookies.set(COOKIE, client.cookies[COOKIE])
    assert (await visitor.get("/console")).headers.get("location") == "/console/login"
    assert (await client.get("/console")).status_code == 200  # the old gateway still takes it


async def test_the_overview_shows_queue_use_trouble_and_refusals(make_gateway) -> None:
    gateway: Gateway = await make_gateway(create_rate_limit="2/minute")
    client_api = await gateway.user_client("alice")
    failed = (await client_api.post(TASKS, json=body("fox [sim:fail]"))).json()["id"]
    await client_api.get(f"{TASKS}/{failed}")
    await client_api.post(TASKS, json=body("waits [sim:hold]"))
    assert (await client_api.post(TASKS, json=body())).status_code == 429
    client, _ = await signed_in(gateway, ADMIN_TOKEN)
    page = (await client.get("/console")).text
    in_flight = re.search(r'id="in-flight">.*?<div class="big">([^<]+)</div>', page, re.S)
    assert in_flight is not None and in_flight.group(1).split() == ["1", "/", "1000"]
    trouble = re.search(r'id="trouble">(.*?)</div>\s*<div class="card" id="refusals"', page, re.S)
    assert trouble is not None and "failed: <strong>1</strong>" in trouble.group(1)
    assert "RateLimitExceeded.KeyCreate: <strong>1</strong>" in page


async def test_a_single_key_gets_its_own_budget_and_limits_from_the_console(
    gateway: Gateway, admin_headers
) -> None:
    user = await gateway.create_user("alice")
    capped = await gateway.create_key(user["id"], name="capped")
    free = await gateway.create_key(user["id"], name="free")
    admin = {"headers": admin_headers}
    listed = (await gateway.client.get(f"/admin/v1/users/{user['id']}/keys", **admin)).json()
    capped_id = next(k["id"] for k in listed if k["name"] == "capped")
    client, csrf = await signed_in(gateway, ADMIN_TOKEN)
    page = f"/console/users/{user['id']}"
    one_task = {"csrf": csrf, "key_id": capped_id, "period": "daily", "limit_tokens": "300000"}
    assert (await client.post(f"{page}/budget", data=one_task)).status_code == 303
    limits = {"csrf": csrf, "key_id": capped_id, "max_tasks_in_flight": "7"}
    assert (await client.post(f"{page}/limits", data=limits)).status_code == 303

    budgets = (await gateway.client.get(f"/admin/v1/users/{user['id']}/budgets", **admin)).json()
    assert [(b["scope"], b["limit_tokens"]) for b in budgets] == [(f"key:{capped_id}", 300_000)]
    shown = await client.get(page)
    assert "key capped · daily" in shown.text and "key capped</td>" in shown.text
    key = next(
        k
        for k in (await gateway.client.get(f"/admin/v1/users/{user['id']}/keys", **admin)).json()
        if k["id"] == capped_id
    )
    assert key["max_tasks_in_flight"] == 7
    user_row = (await gateway.client.get(f"/admin/v1/users/{user['id']}", **admin)).json()
    assert user_row["max_tasks_in_flight"] is None  # the key's, not the user's

    # The budget binds that key only: its second 1080p task (246,840 tokens each) is refused.
    task = body("fox", model="seedance-1-0-pro-250528")
    assert (await gateway.as_user(capped).post(TASKS, json=task)).status_code == 200
    refused = await gateway.as_user(capped).post(TASKS, json=task)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "QuotaExceeded.Budget"
    assert (await gateway.as_user(free).post(TASKS, json=task)).status_code == 200

    stranger = await gateway.create_user("bob")
    foreign = {"csrf": csrf, "key_id": capped_id, "limit": "1"}
    before = await database_rows(gateway.app)
    assert (
        await client.post(f"/console/users/{stranger['id']}/budget", data=foreign)
    ).status_code == 404
    assert await database_rows(gateway.app) == before
    remove = {"csrf": csrf, "key_id": capped_id}
    assert (await client.post(f"{page}/budget/delete", data=remove)).status_code == 303
    assert (await gateway.client.get(f"/admin/v1/users/{user['id']}/budgets", **admin)).json() == []
