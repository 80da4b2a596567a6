-- wrk script for `python -m bench.run`: JSON POSTs of chat completions, one customer per call.
--
--   wrk -c N -t T -d 10s -s bench/post.lua URL -- <key> <users> <stream 0|1> <user prefix> <model> [<think ms>]
--
-- (<think ms> is for bench/paced.lua, which loads this script.) Each call sends
-- `Authorization: Bearer <key>` and a body whose `user` cycles over <prefix>0 ..
-- <prefix><users-1>; with <stream> = 1 the body asks for `"stream":true`.
-- Every non-2xx answer is counted by status in the response() hook. done() prints one line:
--   BENCH requests=… duration_us=… p50_us=… p90_us=… p99_us=… max_us=… connect=… read=… write=…
--         timeout=… non2xx=… statuses=<status>:<count>,…

local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  local key = args[1]
  users = tonumber(args[2])
  stream = args[3] == "1"
  prefix = args[4]
  model = args[5]
  think_ms = tonumber(args[6] or "0")
  counter = thread_index * 37
  non2xx = 0
  statuses = {}
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. key
end

function request()
  counter = counter + 1
  local user = prefix .. (counter % users)
  local extra = stream and ',"stream":true' or ""
  local body = string.format(
    '{"model":"%s","user":"%s"%s,"messages":[{"role":"user","content":"hi"}]}', model, user, extra)
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    statuses[status] = (statuses[status] or 0) + 1
  end
end

function done(summary, latency, requests)
  local non2xx_total = 0
  local by_status = {}
  for _, thread in ipairs(threads) do
    non2xx_total = non2xx_total + thread:get("non2xx")
    for status, count in pairs(thread:get("statuses")) do
      by_status[status] = (by_status[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(by_status) do
    table.insert(parts, status .. ":" .. count)
  end
  local errors = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d "
      .. "connect=%d read=%d write=%d timeout=%d non2xx=%d statuses=%s\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, errors.connect, errors.read, errors.write, errors.timeout,
    non2xx_total, table.concat(parts, ",")))
end
