-- Requests the paths listed in the file named by the PATHS environment variable,
-- each wrk thread taking every n-th line from its own offset, so that every
-- request of a cache-miss run asks for a URL nobody asked for before.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  table.insert(threads, thread)
  counter = counter + 1
end

function init(args)
  paths = {}
  local n = 0
  local stride = tonumber(os.getenv("THREADS"))
  for line in io.lines(os.getenv("PATHS")) do
    if n % stride == id then
      table.insert(paths, line)
    end
    n = n + 1
  end
  index = 0
end

function request()
  index = index + 1
  if index > #paths then
    index = 1 -- wrapped: the run was longer than the list (reported as "wrapped")
    wrapped = true
  end
  return wrk.format("GET", paths[index])
end

function done(summary, latency, requests)
  io.write(string.format(
    "RESULT {\"requests\": %d, \"duration_us\": %d, \"bytes\": %d, " ..
    "\"connect_errors\": %d, \"read_errors\": %d, \"write_errors\": %d, " ..
    "\"status_errors\": %d, \"timeouts\": %d, " ..
    "\"p50_us\": %d, \"p95_us\": %d, \"p99_us\": %d, \"max_us\": %d}\n",
    summary.requests, summary.duration, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
