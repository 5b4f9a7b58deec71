-- wrk script: POST a Cloud API webhook carrying one text message ("help") per request.
-- Every request has its own wamid (run nonce, thread, counter), so the app stores and handles
-- each one instead of dropping it as a duplicate; senders vary too, so no two requests in
-- flight fight over one sender's rows. Arguments after `--`: run nonce, webhook secret.
-- At the end it prints one line "BENCH_JSON {...}" with the figures bench/ingest.py reads.

local body_format = '{"object":"whatsapp_business_account","entry":[{"id":"200000000000001",'
  .. '"changes":[{"field":"messages","value":{"messaging_product":"whatsapp",'
  .. '"metadata":{"display_phone_number":"254700000000","phone_number_id":"100000000000001"},'
  .. '"contacts":[{"profile":{"name":"Bench"},"wa_id":"%s"}],'
  .. '"messages":[{"from":"%s","id":"%s","timestamp":"%d","type":"text","text":{"body":"help"}}]'
  .. '}}]}]}'

local next_thread = 0
thread_id = 0
counter = 0
nonce = "run"

function setup(thread)
  thread:set("thread_id", next_thread)
  next_thread = next_thread + 1
end

function init(args)
  nonce = args[1] or "run"
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-Webhook-Secret"] = args[2] or "dev-webhook-secret"
end

function request()
  counter = counter + 1
  local phone = string.format("2547%d%07d", thread_id % 10, counter % 10000000)
  local wamid = string.format("wamid.bench.%s.%d.%d", nonce, thread_id, counter)
  local body = string.format(body_format, phone, phone, wamid, os.time())
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
