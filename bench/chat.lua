-- wrk script for the bench: POST a small chat request with a bearer key; write a JSON summary when done.
--
--   BENCH_KEY     the gateway key, sent as "Authorization: Bearer ..." (also sent to the upstream directly: harmless)
--   BENCH_MODEL   the model name to ask for
--   BENCH_STREAM  "1" for "stream": true
--   BENCH_OUT     where done() writes its JSON summary (latencies in microseconds)
--
-- No response() callback: defining one makes wrk hand every response to Lua, which would slow the load
-- generator down on the CPU it shares with the upstream. Errors come from wrk's own counters instead
-- (errors.status counts every response with a status of 400 or more).

local key = os.getenv("BENCH_KEY") or ""
local model = os.getenv("BENCH_MODEL") or "gpt-4o-mini"
local stream = os.getenv("BENCH_STREAM") == "1"
local out = os.getenv("BENCH_OUT")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.body = string.format(
  '{"model":"%s","messages":[{"role":"system","content":"You are terse."},'
    .. '{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64,"temperature":0%s}',
  model,
  stream and ',"stream":true' or ""
)

function done(summary, latency, requests)
  local e = summary.errors
  local line = string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max
  )
  if out then
    local f = assert(io.open(out, "w"))
    f:write(line)
    f:close()
  else
    io.write(line)
  end
end
