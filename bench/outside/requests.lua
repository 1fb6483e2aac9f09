-- wrk script for bench/outside/run.sh: each request is the next line of a
-- file, sent once (a repeated webhook is a cheap "duplicate", a repeated
-- click a cached one).
--
--   wrk -t1 -c32 -d120s -s requests.lua URL -- webhooks FILE DONE_FILE
--       lines: webhook-id, webhook-timestamp, webhook-signature, body (tabs)
--   wrk -t1 -c32 -d120s -s requests.lua URL -- invites FILE DONE_FILE
--       lines: invite tokens
--
-- Once every line has its answer, the thread stops and writes a line to
-- DONE_FILE (run.sh's FIFO):
-- wrk itself sleeps out its -d, so run.sh ends it with SIGINT then. Prints
-- the answers by status, and the seconds from the first request to the last
-- answer (CLOCK_MONOTONIC through LuaJIT's ffi), which run.sh divides by.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } outside_timespec;
  int clock_gettime(int clock, outside_timespec *ts);
]]
local ts = ffi.new("outside_timespec")
local function now()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

local requests = {}
local next_one = 0
local real_answers = 0
local done_file
-- Globals, for done() to read through thread:get.
answers = {}
first_sent = 0
last_answer = 0

function init(args)
  local kind, file = args[1], args[2]
  done_file = args[3]
  for line in io.lines(file) do
    if kind == "webhooks" then
      local id, stamp, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      requests[#requests + 1] = wrk.format("POST", "/webhooks/payment", {
        ["Content-Type"] = "application/json",
        ["webhook-id"] = id,
        ["webhook-timestamp"] = stamp,
        ["webhook-signature"] = sig,
      }, body)
    else
      requests[#requests + 1] = wrk.format("GET", "/w/invite/" .. line, {
        ["User-Agent"] = "Mozilla/5.0 (Linux; Android 14) outside-bench",
      })
    end
  end
  -- What the connections send once the file is used up, until the last
  -- answers are in: a 404 (no such route), told apart by its status.
  spare = wrk.format("GET", "/outside-bench-spare", {})
end

-- wrk asks each thread for one request before it connects, to check that
-- it parses, and never sends it: that one is the spare, so no line is lost.
local checked = false

function request()
  if not checked then
    checked = true
    return spare
  end
  next_one = next_one + 1
  if next_one == 1 then
    first_sent = now()
  end
  if next_one > #requests then
    return spare
  end
  return requests[next_one]
end

function response(status, headers, body)
  answers[status] = (answers[status] or 0) + 1
  if status ~= 404 then
    real_answers = real_answers + 1
    last_answer = now()
    if real_answers == #requests then
      wrk.thread:stop()
      -- A line into run.sh's FIFO, which it blocks on: a shell that polled
      -- for a file here forked a `sleep` 200 times a second and took a
      -- third of the rate from what it measured (2026-12-08).
      local f = io.open(done_file, "w")
      f:write("done\n")
      f:close()
    end
  end
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function done(summary, latency, requests)
  local line = "answers"
  local seconds = 0
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("answers")) do
      line = line .. " " .. status .. "x" .. count
    end
    seconds = thread:get("last_answer") - thread:get("first_sent")
  end
  print(line)
  print(string.format("seconds %.4f", seconds))
  print(string.format("latency p50 %.2f ms, p99 %.2f ms, max %.2f ms (p90 %.2f ms, p99.9 %.2f ms)",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    latency:percentile(90) / 1000, latency:percentile(99.9) / 1000))
end
