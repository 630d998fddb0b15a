#!/bin/sh
# Build dist/mediafed_<version>.zip with `rc-apps package`.
#
# rc-apps compiles every .ts file under the folder it runs in (tests too) and
# type-checks against whatever @types/node it finds, and its module resolver
# cannot follow the current @types/node into undici-types. So it runs on a
# staging copy holding only what the App ships, outside this folder, whose
# node_modules links just the Rocket.Chat packages and TypeScript.
set -eu
cd "$(dirname "$0")/.."
here=$(pwd)
stage=$(mktemp -d "${TMPDIR:-/tmp}/mediafed-app.XXXXXX")
trap 'rm -rf "$stage"' EXIT
cp -r app.json icon.png i18n src package.json tsconfig.json .rcappsconfig "$stage/"
mkdir -p "$stage/node_modules"
ln -s "$here/node_modules/@rocket.chat" "$stage/node_modules/@rocket.chat"
ln -s "$here/node_modules/typescript" "$stage/node_modules/typescript"
# Node 16 typings: the newest ones import undici-types, which rc-apps cannot resolve.
mkdir -p "$stage/node_modules/@types"
ln -s "$here/node_modules/rc-apps-types-node" "$stage/node_modules/@types/node"
(cd "$stage" && "$here/node_modules/.bin/rc-apps" package)
mkdir -p dist
cp "$stage"/dist/*.zip dist/
ls dist/*.zip
