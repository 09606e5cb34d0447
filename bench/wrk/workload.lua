-- One wrk script for every bench workload: `wrk ... -s workload.lua URL -- MODE DATAFILE`.
-- MODE: get (the URL as given), list (random offset), article (random slug), feed (token),
-- list and article signed in (`-- list MAX_OFFSET TOKENS`, `-- article SLUGS TOKENS`: a random token),
-- write (comment / favourite / unfavourite on random articles as random users), login.
-- DATAFILE lines: "slug" for article/write, "token" for feed/write, "email password" for login.
-- paths: `-- paths PATHSFILE [TOKEN]`, GET a random line of PATHSFILE (signed in with TOKEN).
-- done() prints one JSON object (latencies in microseconds) that bench/load.py parses.

local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

local mode, slugs, tokens, creds, max_offset = "get", {}, {}, {}, 480
local paths, signed = {}, nil

local function read_lines(path)
  local lines = {}
  for line in io.lines(path) do
    if #line > 0 then table.insert(lines, line) end
  end
  return lines
end

function init(args)
  mode = args[1] or "get"
  math.randomseed(os.time() * 1000 + (id or 0))
  if mode == "article" then
    slugs = read_lines(args[2])
    if args[3] then tokens = read_lines(args[3]) end
  elseif mode == "feed" then
    tokens = read_lines(args[2])
  elseif mode == "write" then
    slugs = read_lines(args[2])
    tokens = read_lines(args[3])
  elseif mode == "login" then
    for _, line in ipairs(read_lines(args[2])) do
      local email, password = line:match("^(%S+) (%S+)$")
      table.insert(creds, string.format('{"user":{"email":"%s","password":"%s"}}', email, password))
    end
  end
  if mode == "list" then
    max_offset = tonumber(args[2] or "480")
    if args[3] then tokens = read_lines(args[3]) end
  end
  if mode == "paths" then
    paths = read_lines(args[2])
    if args[3] then signed = { Authorization = "Token " .. args[3] } end
  end
end

local function pick(list) return list[math.random(#list)] end

-- A random reader's Authorization header, or none when no tokens were given.
local function reader()
  if #tokens == 0 then return nil end
  return { Authorization = "Token " .. pick(tokens) }
end

local json = { ["Content-Type"] = "application/json" }

function request()
  if mode == "list" then
    return wrk.format("GET", "/api/articles?limit=20&offset=" .. math.random(0, max_offset), reader())
  elseif mode == "article" then
    return wrk.format("GET", "/api/articles/" .. pick(slugs), reader())
  elseif mode == "feed" then
    return wrk.format("GET", "/api/articles/feed?limit=20", { Authorization = "Token " .. pick(tokens) })
  elseif mode == "write" then
    local headers = { Authorization = "Token " .. pick(tokens), ["Content-Type"] = "application/json" }
    local slug = pick(slugs)
    local op = math.random(3)
    if op == 1 then
      return wrk.format("POST", "/api/articles/" .. slug .. "/comments", headers,
        '{"comment":{"body":"A benchmark comment, short and to the point."}}')
    elseif op == 2 then
      return wrk.format("POST", "/api/articles/" .. slug .. "/favorite", headers)
    end
    return wrk.format("DELETE", "/api/articles/" .. slug .. "/favorite", headers)
  elseif mode == "login" then
    return wrk.format("POST", "/api/users/login", json, pick(creds))
  elseif mode == "paths" then
    return wrk.format("GET", pick(paths), signed)
  end
  return wrk.format(nil, nil)
end

function done(summary, latency, requests)
  -- wrk counts a status >= 400 as an error; no workload here is ever redirected (3xx), and
  -- a response() hook to count those would cost wrk CPU on a machine the app shares.
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
