-- wrk script: the calls of post.lua, paced. Each connection waits <think ms> (the sixth script
-- argument) after an answer before it sends its next call: wrk's delay() hook, whose wait is
-- not part of any call's latency. So N connections offer a load below what saturates the
-- machine, and the latency measured is that of calls arriving at a steady, sustainable rate.
--
--   wrk -c N -t T -d 10s -s bench/paced.lua URL -- <key> <users> <stream 0|1> <prefix> <model> <think ms>

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "post.lua")

function delay()
  return think_ms
end
