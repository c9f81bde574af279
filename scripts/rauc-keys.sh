#!/usr/bin/env bash
# The key that signs update bundles and the keyring the image trusts, printed as shell
# assignments for scripts/build-image.sh and scripts/build-bundle.sh:
#   RAUC_KEY=...  RAUC_CERT=...  RAUC_KEYRING=...
#
#   scripts/rauc-keys.sh --env               the development key, made on first use
#   scripts/rauc-keys.sh --env --dir DIR     another development key (tests: a foreign signer)
#   RAUC_KEY=... RAUC_CERT=... [RAUC_KEYRING=...] scripts/rauc-keys.sh --env
#                                            the production key, kept outside the tree (a file
#                                            or a PKCS#11 URI); the keyring defaults to the cert
#
# The development key is a self-signed certificate in build/rauc-dev/ (ignored by git, never
# shipped): an image built with it trusts only bundles it signed. docs/IMAGE.md, "Keys".
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build/rauc-dev env=0
while [ $# -gt 0 ]; do
  case "$1" in
    --env) env=1; shift ;;
    --dir) dir=${2:?--dir needs a directory}; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "rauc-keys.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
[ "$env" = 1 ] || { echo "rauc-keys.sh: --env is the only mode (try --help)" >&2; exit 2; }
q() { printf '%q' "$1"; }
if [ -n "${RAUC_KEY:-}" ] || [ -n "${RAUC_CERT:-}" ]; then
  [ -n "${RAUC_KEY:-}" ] && [ -n "${RAUC_CERT:-}" ] ||
    { echo "rauc-keys.sh: RAUC_KEY and RAUC_CERT go together" >&2; exit 2; }
  echo "RAUC_KEY=$(q "$RAUC_KEY") RAUC_CERT=$(q "$RAUC_CERT") RAUC_KEYRING=$(q "${RAUC_KEYRING:-$RAUC_CERT}")"
  exit 0
fi
if [ ! -s "$dir/cert.pem" ] || [ ! -s "$dir/key.pem" ]; then
  command -v openssl >/dev/null || { echo "rauc-keys.sh: openssl missing (apt install openssl)" >&2; exit 1; }
  mkdir -p "$dir"
  openssl req -x509 -newkey rsa:3072 -nodes -days 3650 -sha256 \
    -subj "/O=Vantage/CN=Vantage development bundle key $(basename "$dir")" \
    -keyout "$dir/key.pem.tmp" -out "$dir/cert.pem.tmp" 2>/dev/null
  chmod 0600 "$dir/key.pem.tmp"
  mv "$dir/key.pem.tmp" "$dir/key.pem"
  mv "$dir/cert.pem.tmp" "$dir/cert.pem"
  echo "rauc-keys.sh: made a development key in $dir (not for production)" >&2
fi
abs=$(cd "$dir" && pwd)
echo "RAUC_KEY=$(q "$abs/key.pem") RAUC_CERT=$(q "$abs/cert.pem") RAUC_KEYRING=$(q "$abs/cert.pem")"
