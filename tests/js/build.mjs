// Bundle the test clients into dist/ (one script per page; tests serve it).
import { build } from "esbuild";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
await build({
  entryPoints: [join(here, "src", "matrix-client.js")],
  bundle: true,
  format: "iife",
  platform: "browser",
  target: ["es2022"],
  outfile: join(here, "dist", "matrix-client.js"),
  logLevel: "warning",
});
console.log("test clients built into dist/");
