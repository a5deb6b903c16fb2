-- wrk script for bench/api_cost.py: the same small request as chat.lua, as a chat completion (BENCH_API=chat,
-- POST /v1/chat/completions) or through the Responses API (BENCH_API=responses, POST /v1/responses).
--   BENCH_KEY, BENCH_MODEL, BENCH_OUT as in chat.lua.
local key = os.getenv("BENCH_KEY") or ""
local model = os.getenv("BENCH_MODEL") or "gpt-4o-mini"
local api = os.getenv("BENCH_API") or "chat"  -- chat | responses | responses-stored
local out = os.getenv("BENCH_OUT")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
if api == "responses" or api == "responses-stored" then
  -- responses-stored: the API's default (store: true), the gateway keeps each response for later turns
  wrk.path = "/v1/responses"
  wrk.body = string.format(
    '{"model":"%s","instructions":"You are terse.","input":"Say hello in one short sentence.",'
      .. '"max_output_tokens":64,"temperature":0%s}',
    model,
    api == "responses" and ',"store":false' or ""
  )
else
  wrk.path = "/v1/chat/completions"
  wrk.body = string.format(
    '{"model":"%s","messages":[{"role":"system","content":"You are terse."},'
      .. '{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64,"temperature":0}',
    model
  )
end

function done(summary, latency, requests)
  local e = summary.errors
  local line = string.format(
    '{"requests":%d,"duration_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p99":%d}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)
  )
  local f = assert(io.open(out, "w"))
  f:write(line)
  f:close()
end
