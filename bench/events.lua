-- wrk script of the webhook_guard load benchmark: every request is a new,
-- pre-signed event read from the events file written by bench/gen.
--
--   wrk -t2 -c32 -d10s -s bench/events.lua http://127.0.0.1:PORT/hook -- EVENTS_FILE THREADS
--
-- Thread k of THREADS sends events k, k+THREADS, k+2*THREADS, ... so no two
-- threads send the same event. A thread that runs out of events starts over
-- (its events then become duplicates); done() reports how often that
-- happened, and the script treats it as a failed round.
-- done() prints one machine-readable line starting with "WGBENCH".

local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local prefix, tail, hdrs, ids, n, i

function init(args)
  local file, nthreads = args[1], tonumber(args[2])
  if not file or not nthreads then
    error("usage: -- EVENTS_FILE THREADS")
  end
  local f = assert(io.open(file, "rb"))
  local magic, provider, size = f:read("*l"):match("^(WGBENCH1) (%S+) (%d+)")
  assert(magic, file .. " is not an events file written by bench/gen")
  local head = f:read("*l")
  tail = f:read("*l")
  local host = wrk.host .. ":" .. wrk.port
  prefix = "POST " .. wrk.path .. " HTTP/1.1\r\nHost: " .. host ..
    "\r\nContent-Type: application/json\r\nContent-Length: " .. size .. "\r\n"
  ids, hdrs, n = {}, {}, 0
  local k = 0
  for line in f:lines() do
    if k % nthreads == tid then
      local id, rest = line:match("^([^\t]+)\t(.*)$")
      n = n + 1
      ids[n] = head .. id
      hdrs[n] = rest:gsub("\t", "\r\n") .. "\r\n\r\n"
    end
    k = k + 1
  end
  f:close()
  i = 0
  wrapped = 0
end

function request()
  i = i + 1
  if i > n then
    i = 1
    wrapped = wrapped + 1
  end
  return prefix .. hdrs[i] .. ids[i] .. tail
end

function done(summary, latency, requests)
  local wraps = 0
  for _, t in ipairs(threads) do
    wraps = wraps + (t:get("wrapped") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    "WGBENCH requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d " ..
    "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d wrapped=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout, wraps))
end
