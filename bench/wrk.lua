-- wrk script of bench/harness.py (wrk -s bench/wrk.lua ...).
--
-- With BENCH_WRK_BODY naming a file, every request is a POST of that file's bytes with
-- Content-Type text/xml (an update check); without it, wrk's plain GET. done() prints one
-- line, "BENCH {json}", with wrk's exact counters (microseconds, bytes), so the harness
-- does not have to parse wrk's rounded human-readable summary.

local body_file = os.getenv("BENCH_WRK_BODY")
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  wrk.method = "POST"
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = "text/xml"
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"duration_us": %d, "requests": %d, "bytes": %d, "connect": %d, "read": %d, '
      .. '"write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
