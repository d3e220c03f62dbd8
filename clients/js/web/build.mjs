// Build the web client into the Python package (app/web/static by default, or the folder
// given), deterministically: the same sources give the same bytes, so the test command can
// rebuild into a temporary folder and compare with what ships.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? join(here, "../../../app/web/static"));
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(here, "main.ts")],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  legalComments: "none",
  charset: "utf8",
  outfile: join(out, "app.js"),
  logLevel: "warning",
});
for (const name of ["index.html", "style.css", "favicon.svg"]) copyFileSync(join(here, name), join(out, name));
