#!/usr/bin/env bash
# Bundles the browser softphone (web/phone/main.js with JsSIP from npm) into web/dist/phone.js,
# which the server embeds (src/api/web.rs) and serves at /phone/phone.js: browsers never load a
# script from anywhere else. Versions are pinned in package.json and package-lock.json.
#   bash web/build.sh           # rebuild after changing web/phone or the pinned versions
#   bash web/build.sh --check   # fail when the committed bundle is not what the sources build
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --loglevel=error >/dev/null
if [ "${1:-}" = "--check" ]; then
  out=$(mktemp -d)
  npx esbuild phone/main.js --bundle --minify --format=iife --target=es2020 --legal-comments=eof --log-level=warning --outfile="$out/phone.js"
  if ! cmp -s "$out/phone.js" dist/phone.js; then
    echo "web/dist/phone.js is stale: run bash web/build.sh and commit it" >&2
    exit 1
  fi
  echo "web/dist/phone.js matches its sources"
else
  # The bundled packages' licences (all MIT), served beside the bundle.
  node -e 'const l=require("./package-lock.json"),fs=require("fs");let t="Third-party code in phone.js\n";for(const [k,v] of Object.entries(l.packages)){if(!k||v.dev)continue;const d=k;const f=fs.readdirSync(d).find(n=>/^licen[cs]e/i.test(n));t+="\n==== "+k.replace("node_modules/","")+" "+v.version+" ("+v.license+") ====\n"+(f?fs.readFileSync(d+"/"+f,"utf8"):"(no licence file)\n")}fs.writeFileSync("dist/THIRD-PARTY-LICENSES.txt",t)'
  npx esbuild phone/main.js --bundle --minify --format=iife --target=es2020 --legal-comments=eof --log-level=warning --outfile=dist/phone.js
  ls -l dist/phone.js
fi
