-- Shared by put.lua and get.lua: each wrk thread takes its own slice of a pool file of
-- request targets (one per line), so every PUT goes to a fresh, pre-signed path.
local counter = 0
local threads = {}

function setup(thread)
    thread:set("tid", counter)
    counter = counter + 1
    table.insert(threads, thread)
end

function load_pool(file, nthreads)
    local pool = {}
    local n = 0
    for line in io.lines(file) do
        if n % nthreads == tid then
            pool[#pool + 1] = line
        end
        n = n + 1
    end
    return pool
end

-- One JSON line wrk's caller parses: throughput, latency percentiles (µs), errors.
function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
        '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
        summary.requests, summary.duration, summary.bytes,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
        e.connect, e.read, e.write, e.status, e.timeout))
end
