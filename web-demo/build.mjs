// Build the web-demo into ../mediafed/static/web-demo/ (index.html + assets/),
// which `mediafed serve` serves at / and /assets/ without node at run time.
import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "mediafed", "static", "web-demo");

await rm(out, { recursive: true, force: true });
await mkdir(join(out, "assets"), { recursive: true });
await build({
  entryPoints: [join(here, "src", "main.ts")],
  bundle: true,
  format: "esm",
  target: ["es2020"],
  minify: true,
  sourcemap: false,
  legalComments: "linked",
  outfile: join(out, "assets", "app.js"),
  logLevel: "warning",
});
await copyFile(join(here, "src", "style.css"), join(out, "assets", "style.css"));
await copyFile(join(here, "index.html"), join(out, "index.html"));
console.log(`web-demo built into ${out}`);
