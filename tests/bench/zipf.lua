-- wrk script for scenario S6: every request carries a tenant token drawn Zipf-like
-- (rank r with weight 1/r^s) from a file of tokens, one a line, hottest first.
--   wrk -t2 -c16 -d10s -s zipf.lua http://127.0.0.1:PORT -- TOKENS_FILE [S] [MODEL] [stream]
-- Prints one JSON line from done(): counts, errors and latency percentiles in µs.

local tokens = {}
local cdf = {}
local body = nil
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end

function init(args)
  local path, s, model, stream = args[1], tonumber(args[2] or "1.0"), args[3] or "mock", args[4] == "stream"
  for line in io.lines(path) do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
  local total = 0
  for i = 1, #tokens do
    total = total + 1 / (i ^ s)
    cdf[i] = total
  end
  for i = 1, #tokens do cdf[i] = cdf[i] / total end
  math.randomseed(os.time() * 1000 + (seed or 0))
  body = '{"model":"' .. model .. '","max_tokens":64,' .. (stream and '"stream":true,' or '') ..
    '"messages":[{"role":"user","content":"Hello, benchmark"}]}'
end

function request()
  local u = math.random()
  local lo, hi = 1, #cdf
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return wrk.format("POST", "/v1/chat/completions",
    { ["Authorization"] = "Bearer " .. tokens[lo], ["Content-Type"] = "application/json" }, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
