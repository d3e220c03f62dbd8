import assert from "node:assert/strict";
import { test } from "node:test";
import { Api } from "../src/api.js";
import { ApiError, Transient, Unauthorized } from "../src/errors.js";

const problem = (status: number, code: string) =>
  new Response(JSON.stringify({ status, code, detail: code }), {
    status,
    headers: { "content-type": "application/problem+json" },
  });

/** An Api whose every request is answered by `answer`; records what was asked. */
function api(answer: () => Response) {
  const asked: { url: string; method: string; authorization: string | null }[] = [];
  const fetchImpl: typeof fetch = async (input, init) => {
    const headers = new Headers(init?.headers);
    asked.push({ url: String(input), method: init?.method ?? "", authorization: headers.get("authorization") });
    return answer();
  };
  return { asked, api: new Api("http://s/", "t", fetchImpl) };
}

test("userExists: true on 200, false on 404 user_not_found, asked with the token", async () => {
  const found = api(() => new Response(JSON.stringify({ user_id: "bob" }), { status: 200 }));
  assert.equal(await found.api.userExists("bob"), true);
  assert.deepEqual(found.asked, [{ url: "http://s/users/bob", method: "GET", authorization: "Bearer t" }]);
  const missing = api(() => problem(404, "user_not_found"));
  assert.equal(await missing.api.userExists("a.b_c-d"), false);
  assert.equal(missing.asked[0]?.url, "http://s/users/a.b_c-d");
});

test("userExists: any other answer is thrown, never taken for 'no such user'", async () => {
  // A server without the lookup answers 404 not_found: that is not an answer about the user.
  await assert.rejects(
    api(() => problem(404, "not_found")).api.userExists("bob"),
    (e) => e instanceof ApiError && e.code === "not_found",
  );
  await assert.rejects(api(() => problem(401, "unauthorized")).api.userExists("bob"), Unauthorized);
  await assert.rejects(api(() => problem(503, "database_unavailable")).api.userExists("bob"), Transient);
  const offline = new Api("http://s", "t", async () => {
    throw new TypeError("fetch failed");
  });
  await assert.rejects(offline.userExists("bob"), Transient);
});
