-- POST one fixed body over and over; print the run's statistics (429 answers counted apart) as one JSON line from done().
-- usage: [WRK_DELAY_MS=n] wrk ... -s post.lua URL -- BODY_FILE CONTENT_TYPE
-- WRK_DELAY_MS makes each connection pause n ms between requests (the soak test's paced load). It is
-- read when the script loads, not in init(): wrk decides whether delay() exists before calling init().

local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "0")
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   local f = assert(io.open(args[1], "rb"))
   wrk.method = "POST"
   wrk.body = f:read("*a")
   f:close()
   wrk.headers["Content-Type"] = args[2]
   refused = 0
end

function response(status, headers, body)
   if status == 429 then
      refused = refused + 1
   end
end

if delay_ms > 0 then
   -- defined only when pacing: a delay() of 0 ms would still send every request through a timer
   function delay()
      return delay_ms
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   local refused = 0
   for _, thread in ipairs(threads) do
      refused = refused + (thread:get("refused") or 0)
   end
   io.write(string.format(
      'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"refused":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f,"stdev":%.1f}}\n',
      summary.requests, summary.duration, summary.bytes, refused,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      latency.mean, latency.stdev))
end
