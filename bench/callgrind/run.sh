#!/usr/bin/env bash
# Instructions per request, counted by callgrind: user-space instructions
# only (not the kernel's work), but the same binary and inputs give the same
# count within a few percent whatever else the machine is doing, where its
# CPU times drift by a third within an hour.
#
#   bench/callgrind/run.sh [ORDERLINK_BIN] [BENCH_BIN]
#
# Prints, for the constant 302 of `bench ceiling-server`, a redirect of a
# token orderlink has in memory, and a paid order (signed webhook, both
# messages sent to a fake Graph API at 0 ms and recorded): instructions per
# request, every thread of the server. Needs valgrind and python3; about
# three minutes. Nothing runs pinned: callgrind runs one thread at a time.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(realpath "${1:-target/release/orderlink}")
bench=$(realpath "${2:-target/release/bench}")
work=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

live() { # $1 port, $2 graph port, $3 database, then the command, in the background
  (exec env -i PATH="$PATH" WHATSAPP_TOKEN=bench WHATSAPP_PHONE_NUMBER_ID=106540352242922 \
    WHATSAPP_BUSINESS_NUMBER_E164=919999900000 \
    PAYMENT_WEBHOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw \
    WHATSAPP_APP_SECRET=bench-app-secret WHATSAPP_API_BASE="http://127.0.0.1:$2" \
    DATABASE_PATH="$3" ROCKET_ADDRESS=127.0.0.1 ROCKET_PORT="$1" \
    WHATSAPP_MAX_MPS=1000000 APP_BASE_URL="http://127.0.0.1:$1" "${@:4}") &
}
callgrind() { # $1 output prefix
  echo valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$1.%p"
}
per() { # $1 callgrind output prefix, $2 requests
  awk -v n="$2" '/^totals:/ {printf "%.0f", $2 / n}' "$1".*.1
}
stop() { kill -INT "$1"; wait "$1" || true; }

# The constant 302.
$(callgrind "$work/ceiling") "$bench" ceiling-server 18310 >"$work/ceiling.log" 2>&1 &
pid=$!
python3 "$here/drive.py" ceiling 18310 2000 "$pid"
stop "$pid"
ceiling=$(per "$work/ceiling" 2000)

# Tokens to click: 4,000 paid orders on a server run natively.
live 18311 18312 "$work/clicks.db" "$bin" serve >"$work/seed.log" 2>&1
seed=$!
python3 "$here/drive.py" paid 18311 18312 4000 seed
stop "$seed"
python3 -c 'import sqlite3,sys; [print(t) for (t,) in sqlite3.connect(sys.argv[1]).execute("SELECT token FROM whatsapp_tokens")]' \
  "$work/clicks.db" >"$work/tokens"

# Redirects: every token clicked once (so it is in memory), then 2,000 counted.
live 18313 18314 "$work/clicks.db" $(callgrind "$work/invite") "$bin" serve >"$work/invite.log" 2>&1
pid=$!
python3 "$here/drive.py" clicks 18313 "$work/tokens" 4020 2000 "$pid"
stop "$pid"
invite=$(per "$work/invite" 2000)

# Paid orders: 300 counted after 20.
live 18315 18316 "$work/paid.db" $(callgrind "$work/paid") "$bin" serve >"$work/paid.log" 2>&1
pid=$!
python3 "$here/drive.py" paid 18315 18316 300 counted "$pid"
stop "$pid"
paid=$(per "$work/paid" 300)

echo "instructions per request (callgrind, user space, every thread of the server)"
echo "  constant 302 (bench ceiling-server):  $ceiling"
echo "  invite redirect, token in memory:     $invite  ($(awk -v a="$ceiling" -v b="$invite" 'BEGIN{printf "%.2f", a/b}') of the constant 302)"
echo "  paid order (webhook + both sends):    $paid"
