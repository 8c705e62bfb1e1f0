"""Builds docs/postman/spike.postman_collection.json: the walkthrough's flow (docs/walkthrough.md)
as a Postman collection with tests on every response.

What the OpenAPI document says is taken from it: each request's operation must exist there, and
its name's description is the operation's summary. What it cannot say is written here, by hand:
the order of the steps, the variables one step leaves for the next, and the tests.

    python3 scripts/lib/postman_collection.py OPENAPI_URL --write   # regenerate the file
    python3 scripts/lib/postman_collection.py OPENAPI_URL --check   # fail if it differs
"""

import json
import re
import sys
import urllib.request
from pathlib import Path

COLLECTION = Path(__file__).resolve().parents[2] / "docs/postman/spike.postman_collection.json"
ENVIRONMENT = Path(__file__).resolve().parents[2] / "docs/postman/spike.postman_environment.json"

# Variables a caller sets to run the flow against any instance (newman --env-var / an
# environment): the defaults are the dev server's (README, "Run it").
VARIABLES = {
    "baseUrl": "http://localhost:8080",
    "adminEmail": "admin@example.com",
    "adminPassword": "dev-admin-password",
    "startInSeconds": "20",
}


def status(code, name):
    return f'pm.test("{code} {name}", () => pm.response.to.have.status({code}));'


def envelope(code):
    return [
        "const body = pm.response.json();",
        f'pm.test("envelope code {code}", () => pm.expect(body.code).to.eql({code}));',
        'pm.test("request_id echoed", () => pm.expect(body.request_id).to.eql(pm.response.headers.get("X-Request-Id")));',
    ]


def keep(variable, expression):
    return [
        f'pm.test("has {expression}", () => pm.expect({expression}).to.not.be.undefined);',
        f'pm.collectionVariables.set("{variable}", {expression});',
    ]


def poll(limit, until, then):
    """Repeats this request (up to `limit` times, a second apart) until `until` holds."""
    return [
        "const tries = Number(pm.collectionVariables.get('tries') || 0) + 1;",
        f"if (!({until}) && tries < {limit}) {{",
        "  pm.collectionVariables.set('tries', tries);",
        "  postman.setNextRequest(pm.info.requestName);",
        "} else {",
        "  pm.collectionVariables.set('tries', 0);",
        f'  pm.test("{then}", () => pm.expect({until}).to.be.true);',
        "}",
    ]


def bearer(variable):
    return {"type": "bearer", "bearer": [{"key": "token", "value": f"{{{{{variable}}}}}", "type": "string"}]}


# name, method, path (as the document writes it, {id} for ids), concrete path, token variable,
# body, extra headers, pre-request script, test script.
def steps():
    buyers = ["alice", "bob", "carol"]
    flow = [
        ("1. The admin logs in", "POST", "/api/v1/auth/login", "/api/v1/auth/login", None,
         {"email": "{{adminEmail}}", "password": "{{adminPassword}}"}, {},
         ["pm.collectionVariables.set('runTag', String(Date.now()));"],
         [status(200, "OK"), *envelope(0), *keep("adminToken", "body.data.access_token")]),
        ("2. A product with 10 units", "POST", "/api/v1/products", "/api/v1/products", "adminToken",
         {"title": "Phone X", "description": "The phone everyone wants", "price": "1999.00", "stock": 10}, {},
         [],
         [status(201, "Created"), *envelope(0),
          'pm.test("money is a string", () => pm.expect(body.data.price).to.eql("1999.00"));',
          *keep("productId", "body.data.id")]),
    ]
    for buyer in buyers:
        email = f"{buyer}-{{{{runTag}}}}@example.com"
        flow.append((f"3. {buyer.title()} registers", "POST", "/api/v1/auth/register", "/api/v1/auth/register", None,
                     {"email": email, "password": f"{buyer}-password"}, {}, [],
                     [status(201, "Created"), *envelope(0),
                      'pm.test("a user", () => pm.expect(body.data.role).to.eql("user"));']))
        flow.append((f"3. {buyer.title()} logs in", "POST", "/api/v1/auth/login", "/api/v1/auth/login", None,
                     {"email": email, "password": f"{buyer}-password"}, {}, [],
                     [status(200, "OK"), *envelope(0), *keep(f"{buyer}Token", "body.data.access_token")]))
    flow += [
        ("4. A flash sale of 2 units, starting in {{startInSeconds}} s", "POST", "/api/v1/spike/events",
         "/api/v1/spike/events", "adminToken",
         {"product_id": "{{productId}}", "title": "Phone X at midnight", "spike_price": "999.00", "stock": 2,
          "start_at": "{{startAt}}", "end_at": "{{endAt}}", "per_user_limit": 1}, {},
         ["const at = (seconds) => new Date(Date.now() + seconds * 1000).toISOString().replace(/\\.\\d+Z$/, 'Z');",
          "pm.collectionVariables.set('startAt', at(Number(pm.variables.get('startInSeconds'))));",
          "pm.collectionVariables.set('endAt', at(3600));"],
         [status(201, "Created"), *envelope(0),
          'pm.test("upcoming, with its 2 units", () => { pm.expect(body.data.status).to.eql("upcoming"); pm.expect(body.data.remaining_stock).to.eql(2); });',
          *keep("eventId", "body.data.id")]),
        ("4b. The event's units moved out of the product", "GET", "/api/v1/products/{id}/stock",
         "/api/v1/products/{{productId}}/stock", None, None, {}, [],
         [status(200, "OK"), *envelope(0),
          'pm.test("10 - 2 left", () => pm.expect(body.data.stock).to.eql(8));']),
    ]
    flow += [
        ("5. Too early: no purchase token before the start", "GET", "/api/v1/spike/events/{id}/purchase-token",
         "/api/v1/spike/events/{{eventId}}/purchase-token", "aliceToken", None, {}, [],
         [status(409, "Conflict"), *envelope(50002)]),
        ("6. The sale starts", "GET", "/api/v1/spike/events/{id}", "/api/v1/spike/events/{{eventId}}", None,
         None, {}, ["if (Number(pm.collectionVariables.get('tries') || 0) > 0) setTimeout(() => {}, 1000);"],
         [status(200, "OK"), *envelope(0), *poll(120, "body.data.status === 'active'", "the sale is active")]),
    ]
    for buyer, answer in [("alice", (202, 0)), ("bob", (202, 0)), ("alice", (409, 50005)), ("carol", (409, 50004))]:
        again = " again" if (buyer, answer) == ("alice", (409, 50005)) else ""
        flow.append((f"7. {buyer.title()} takes a purchase token{again}", "GET",
                     "/api/v1/spike/events/{id}/purchase-token",
                     "/api/v1/spike/events/{{eventId}}/purchase-token", f"{buyer}Token", None, {}, [],
                     [status(200, "OK"), *envelope(0), *keep("purchaseToken", "body.data.token")]))
        code, envelope_code = answer
        checks = {202: ['pm.test("queued, with a ticket", () => { pm.expect(body.data.status).to.eql("queued"); pm.expect(body.data.ticket).to.be.a("string"); });'],
                  409: []}[code]
        flow.append((f"8. {buyer.title()} buys{again}", "POST", "/api/v1/spike/events/{id}/orders",
                     "/api/v1/spike/events/{{eventId}}/orders", f"{buyer}Token", None,
                     {"X-Purchase-Token": "{{purchaseToken}}"}, [],
                     [status(code, "Accepted" if code == 202 else "Conflict"), *envelope(envelope_code), *checks]))
    for buyer in ["alice", "bob"]:
        flow.append((f"9. {buyer.title()}'s result", "GET", "/api/v1/spike/events/{id}/result",
                     "/api/v1/spike/events/{{eventId}}/result", f"{buyer}Token", None, {},
                     ["if (Number(pm.collectionVariables.get('tries') || 0) > 0) setTimeout(() => {}, 200);"],
                     [status(200, "OK"), *envelope(0),
                      *poll(100, "body.data.status === 'success'", "an order was made"),
                      f"if (body.data.status === 'success') pm.collectionVariables.set('{buyer}Order', body.data.order_id);"]))
    flow += [
        ("10. Alice pays", "POST", "/api/v1/orders/{id}/pay", "/api/v1/orders/{{aliceOrder}}/pay", "aliceToken",
         {}, {}, [],
         [status(200, "OK"), *envelope(0),
          'pm.test("paid, at the sale price", () => { pm.expect(body.data.status).to.eql("paid"); pm.expect(body.data.kind).to.eql("spike"); pm.expect(body.data.total_amount).to.eql("999.00"); });']),
        ("10. Bob cancels", "POST", "/api/v1/orders/{id}/cancel", "/api/v1/orders/{{bobOrder}}/cancel", "bobToken",
         None, {}, [],
         [status(200, "OK"), *envelope(0),
          'pm.test("cancelled", () => pm.expect(body.data.status).to.eql("cancelled"));']),
        ("10. Bob's unit is back in the sale", "GET", "/api/v1/spike/events/{id}", "/api/v1/spike/events/{{eventId}}",
         None, None, {}, [],
         [status(200, "OK"), *envelope(0),
          'pm.test("one unit left", () => pm.expect(body.data.remaining_stock).to.eql(1));']),
        ("11. Carol takes a purchase token again", "GET", "/api/v1/spike/events/{id}/purchase-token",
         "/api/v1/spike/events/{{eventId}}/purchase-token", "carolToken", None, {}, [],
         [status(200, "OK"), *envelope(0), *keep("purchaseToken", "body.data.token")]),
        # The server clears its sold-out flag when it hears the unit announced, a moment after the
        # cancel: until then a buy may still hear 409 / 50004.
        ("11. Carol buys the returned unit", "POST", "/api/v1/spike/events/{id}/orders",
         "/api/v1/spike/events/{{eventId}}/orders", "carolToken", None, {"X-Purchase-Token": "{{purchaseToken}}"},
         ["if (Number(pm.collectionVariables.get('tries') || 0) > 0) setTimeout(() => {}, 200);"],
         ["const body = pm.response.json();",
          'pm.test("202 Accepted, or 409 sold out for a moment", () => pm.expect([202, 409]).to.include(pm.response.code));',
          'if (pm.response.code === 409) pm.test("only sold out", () => pm.expect(body.code).to.eql(50004));',
          *poll(50, "pm.response.code === 202 && body.code === 0 && body.data.status === 'queued'", "queued")]),
        ("11. Carol's result", "GET", "/api/v1/spike/events/{id}/result",
         "/api/v1/spike/events/{{eventId}}/result", "carolToken", None, {},
         ["if (Number(pm.collectionVariables.get('tries') || 0) > 0) setTimeout(() => {}, 200);"],
         [status(200, "OK"), *envelope(0), *poll(100, "body.data.status === 'success'", "an order was made"),
          "if (body.data.status === 'success') pm.collectionVariables.set('carolOrder', body.data.order_id);"]),
        ("11. Carol's orders", "GET", "/api/v1/orders", "/api/v1/orders", "carolToken", None, {}, [],
         [status(200, "OK"), *envelope(0),
          'pm.test("her flash-sale order, unpaid", () => { const order = body.data.items[0]; pm.expect(order.id).to.eql(Number(pm.collectionVariables.get("carolOrder"))); pm.expect(order.kind).to.eql("spike"); pm.expect(order.status).to.eql("pending_payment"); });']),
    ]
    return flow


def operations(openapi):
    found = {}
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            found[(method.upper(), path)] = operation
    return found


def script(listen, lines):
    return {"listen": listen, "script": {"type": "text/javascript", "exec": lines}}


def render_body(body):
    # Numbers and ids stay JSON numbers once Postman substitutes the variables.
    raw = json.dumps(body)
    return re.sub(r'"(\{\{(?:productId)\}\})"', r"\1", raw)


def build(openapi):
    known = operations(openapi)
    items = []
    for name, method, template, path, token, body, headers, pre, tests in steps():
        operation = known.get((method, template))
        if operation is None:
            sys.exit(f"postman: {method} {template} is not in the OpenAPI document")
        request = {
            "method": method,
            "header": [{"key": key, "value": value} for key, value in headers.items()],
            "url": "{{baseUrl}}" + path,
            "description": (operation.get("summary") or operation.get("description") or "").strip(),
        }
        if token:
            request["auth"] = bearer(token)
        if body is not None:
            request["header"].append({"key": "Content-Type", "value": "application/json"})
            request["body"] = {"mode": "raw", "raw": render_body(body)}
        events = [script("test", tests)]
        if pre:
            events.insert(0, script("prerequest", pre))
        items.append({"name": name, "event": events, "request": request})
    return {
        "info": {
            "_postman_id": "6f1c0a52-5d0e-4d2b-9a57-7a4b1f0c2e91",
            "name": "spike: a whole flash sale",
            "description": "The flow of docs/walkthrough.md, with tests on every response. Set "
            "baseUrl, adminEmail and adminPassword for the instance (defaults: the dev server). "
            "Generated by scripts/lib/postman_collection.py from the OpenAPI document; "
            "scripts/postman.sh runs it with newman.",
            "schema": "https://schema.getpostman.com/json/collection/v2.1.0/collection.json",
        },
        "variable": [{"key": key, "value": value} for key, value in VARIABLES.items()],
        "item": items,
    }


def environment():
    return {
        "id": "0d8c3c1e-4b7a-4f5e-8f42-2f7f3b1d6a10",
        "name": "spike dev (localhost)",
        "values": [{"key": key, "value": value, "enabled": True} for key, value in VARIABLES.items()],
    }


def main():
    url, mode = sys.argv[1], sys.argv[2]
    with urllib.request.urlopen(url) as response:
        openapi = json.load(response)
    wanted = {
        COLLECTION: json.dumps(build(openapi), indent=2, ensure_ascii=False) + "\n",
        ENVIRONMENT: json.dumps(environment(), indent=2) + "\n",
    }
    stale = [path for path, text in wanted.items() if not path.is_file() or path.read_text() != text]
    if mode == "--write":
        for path, text in wanted.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    elif stale:
        names = ", ".join(str(path.relative_to(COLLECTION.parents[2])) for path in stale)
        sys.exit(f"postman: {names} differ from what the OpenAPI document and the flow give; "
                 "run scripts/postman.sh --write and commit the result")


if __name__ == "__main__":
    main()
