// Fail when a committed, generated file is stale: the API types (src/schema.ts and the
// openapi.json they come from) against the service's current OpenAPI document, and the
// web client's build (app/web/static) against its sources. Regenerate with
// `npm run generate` (see README.md). Usage: node scripts/check-fresh.mjs FRESH_OPENAPI_JSON
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const fresh = process.argv[2];
if (!fresh) throw new Error("usage: check-fresh.mjs FRESH_OPENAPI_JSON");
const tmp = mkdtempSync(join(tmpdir(), "msgsync-js-"));
const stale = [];
const same = (a, b) => readFileSync(a).equals(readFileSync(b));
try {
  if (!same(fresh, join(root, "openapi.json"))) stale.push("clients/js/openapi.json");
  const schema = join(tmp, "schema.ts");
  execFileSync(join(root, "node_modules/.bin/openapi-typescript"), [fresh, "-o", schema], { stdio: "ignore" });
  if (!same(schema, join(root, "src/schema.ts"))) stale.push("clients/js/src/schema.ts");
  const web = join(tmp, "web");
  execFileSync(process.execPath, [join(root, "web/build.mjs"), web], { stdio: "inherit" });
  const shipped = join(root, "../../app/web/static");
  const names = new Set([...readdirSync(web), ...readdirSync(shipped)]);
  for (const name of names) {
    let equal = false;
    try {
      equal = same(join(web, name), join(shipped, name));
    } catch {
      equal = false; // missing on one side
    }
    if (!equal) stale.push(`app/web/static/${name}`);
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
if (stale.length) {
  console.error(`stale generated files (run \`npm run generate\` in clients/js): ${stale.join(", ")}`);
  process.exit(1);
}
console.log("generated files are fresh: openapi.json, src/schema.ts, app/web/static");
