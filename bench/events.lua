-- wrk: every request a distinct signed event from the file given after "--" (signature TAB body).
-- Thread t of n sends lines t, t+n, t+2n, ... so no two threads send the same event.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local file, nthreads = args[1], tonumber(args[2])
  requests_list = {}
  local i = 0
  for line in io.lines(file) do
    if i % nthreads == tid then
      local tab = line:find("\t", 1, true)
      local sig, body = line:sub(1, tab - 1), line:sub(tab + 1)
      table.insert(requests_list, wrk.format("POST", nil, {
        ["Content-Type"] = "application/json",
        ["Stripe-Signature"] = sig,
      }, body))
    end
    i = i + 1
  end
  position = 0
  wrapped = 0
end

function request()
  position = position + 1
  if position > #requests_list then
    position = 1
    wrapped = wrapped + 1
  end
  return requests_list[position]
end

function done(summary, latency, requests)
  local non2xx = summary.errors.status
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, non2xx, errors,
    latency:percentile(50), latency:percentile(99), latency.max))
end
