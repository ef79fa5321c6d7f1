-- wrk script for scripts/load_bench.sh: POSTs one Google Vision images:annotate body and
-- checks every answer.
--
-- Environment (read by each wrk thread):
--   LOAD_BODY    file holding the JSON request body
--   LOAD_HEADER  optional extra request header, "Name: value" (X-AdaCompress-Quality: 75,
--                X-AdaCompress-Bypass: 1)
--
-- An answer is good when its status is 200 and its body is a whole Google Vision answer
-- with labels: it starts with {"responses":[, ends with } and holds "labelAnnotations".
-- `done` prints one line, LOADJSON {...}, with wrk's summary, latency percentiles and
-- these counts (statuses, bad bodies, 429s, the proxy's actions, top-1 labels), which
-- scripts/load_bench.py reads.

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
do
  local path = assert(os.getenv("LOAD_BODY"), "LOAD_BODY is not set")
  local f = assert(io.open(path, "rb"))
  wrk.body = f:read("*a")
  f:close()
  local extra = os.getenv("LOAD_HEADER")
  if extra and extra ~= "" then
    local name, value = extra:match("^%s*([^:]+):%s*(.-)%s*$")
    assert(name, "LOAD_HEADER must look like 'Name: value'")
    wrk.headers[name] = value
  end
end

-- Per thread (each wrk thread has its own Lua state).
statuses = {}   -- status code -> count
bad_bodies = 0  -- 200s whose body is not a whole answer with labels
actions = {}    -- X-AdaCompress-Action value -> count
top1 = {}       -- first label's description -> count

local function bump(t, k)
  t[k] = (t[k] or 0) + 1
end

function response(status, headers, body)
  bump(statuses, tostring(status))
  local action = headers["x-adacompress-action"] or headers["X-AdaCompress-Action"]
  bump(actions, action or "-")
  if status == 200 then
    local whole = body:sub(1, 14) == '{"responses":[' and body:match("}%s*$") ~= nil
    if not whole or not body:find('"labelAnnotations"', 1, true) then
      bad_bodies = bad_bodies + 1
    else
      bump(top1, body:match('"description":"(.-)"') or "?")
    end
  end
end

-- Main state: keep the threads so `done` can add up their counts.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local function json_string(s)
  return '"' .. tostring(s):gsub('[%c"\\]', function(c)
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function json_counts(t)
  local parts = {}
  for k, v in pairs(t) do
    table.insert(parts, json_string(k) .. ":" .. tostring(v))
  end
  table.sort(parts)
  return "{" .. table.concat(parts, ",") .. "}"
end

local function merge(into, t)
  for k, v in pairs(t or {}) do
    into[k] = (into[k] or 0) + v
  end
end

function done(summary, latency, requests)
  local all_statuses, all_actions, all_top1, bad = {}, {}, {}, 0
  for _, thread in ipairs(threads) do
    merge(all_statuses, thread:get("statuses"))
    merge(all_actions, thread:get("actions"))
    merge(all_top1, thread:get("top1"))
    bad = bad + (thread:get("bad_bodies") or 0)
  end
  local e = summary.errors
  local pct = {}
  for _, p in ipairs({ 50, 75, 90, 99, 99.9 }) do
    table.insert(pct, string.format('"%s":%d', tostring(p), latency:percentile(p)))
  end
  io.write(string.format(
    'LOADJSON {"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"stdev":%.1f,"percentiles":{%s}},' ..
    '"statuses":%s,"bad_bodies":%d,"actions":%s,"top1":%s}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency.stdev, table.concat(pct, ","),
    json_counts(all_statuses), bad, json_counts(all_actions), json_counts(all_top1)))
end
