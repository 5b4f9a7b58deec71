// Paying from the invoice page without a reload: post the form, then poll the status.
// Loaded as a file (the page's Content-Security-Policy allows no inline script).
(function () {
  "use strict";

  var POLL_MS = 2000;
  var GIVE_UP_MS = 5 * 60 * 1000;

  var root = document.getElementById("invoice");
  var form = document.getElementById("pay-form");
  if (!root || !form) {
    return;
  }
  var button = document.getElementById("pay-button");
  var progress = document.getElementById("progress");
  var retry = document.getElementById("retry");
  var badge = document.getElementById("status-badge");
  var paid = document.getElementById("paid");
  var receipt = document.getElementById("receipt");
  var paidAt = document.getElementById("paid-at");
  var pdfLink = document.getElementById("pdf-link");
  var statusUrl = root.getAttribute("data-status-url");
  var timer = null;
  var pollingSince = 0;

  function show(text, kind) {
    progress.textContent = text;
    progress.className = "notice" + (kind ? " notice-" + kind : "");
    progress.hidden = false;
  }

  function stop() {
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
  }

  function markPaid(receiptNumber, paidAtText) {
    stop();
    badge.textContent = "Paid";
    badge.className = "badge badge-paid";
    receipt.textContent = receiptNumber || "confirmed by M-PESA";
    if (paidAtText) {
      paidAt.textContent = paidAtText;
      paidAt.hidden = false;
    }
    paid.hidden = false;
    form.hidden = true;
    retry.hidden = true;
    progress.hidden = true;
    pdfLink.textContent = "Download the receipt (PDF)";
  }

  function offerRetry(message) {
    stop();
    show(message, "error");  // the server's words say what to do next
    form.hidden = true;
    retry.hidden = false;
  }

  function schedule() {
    if (Date.now() - pollingSince > GIVE_UP_MS) {
      show("No answer from M-PESA yet. Reload this page later to see whether the payment went through.", "error");
      return;
    }
    timer = setTimeout(poll, POLL_MS);
  }

  function applyStatus(data) {
    if (data.status === "PAID") {
      markPaid(data.receipt_number, data.paid_at_text);
      return;
    }
    if (data.status === "CANCELLED") {
      stop();
      badge.textContent = "Cancelled";
      badge.className = "badge badge-cancelled";
      form.hidden = true;
      retry.hidden = true;
      if (data.paid_after_cancel) {
        // Money was taken all the same: never tell this customer it "can't be paid".
        show("This invoice was cancelled, but your M-PESA payment (receipt " +
          (data.receipt_number || "confirmed by M-PESA") + ") was received afterwards. " +
          "The business has been told and will contact you about it. Please do not pay again.", "error");
      } else {
        show("This invoice was cancelled, so it can't be paid.", "error");
      }
      return;
    }
    var payment = data.payment;
    if (payment && payment.status === "FAILED") {
      offerRetry(payment.message);
      return;
    }
    if (payment && payment.status === "INITIATED") {
      show(payment.message);
    }
    schedule();
  }

  function fetchStatus() {
    return fetch(statusUrl, { headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("status " + response.status);
        }
        return response.json();
      });
  }

  function poll() {
    timer = null;
    fetchStatus().then(applyStatus).catch(schedule);
  }

  function refresh() {
    fetchStatus()
      .then(function (data) {
        if (data.status === "CANCELLED" || data.status === "PAID") {
          applyStatus(data);
        }
      })
      .catch(function () {});
  }

  function startPolling() {
    stop();
    pollingSince = Date.now();
    timer = setTimeout(poll, POLL_MS);
  }

  function errorMessage(body) {
    if (body && body.error && body.error.message) {
      return body.error.message;
    }
    return "Something went wrong. Please try again.";
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    button.disabled = true;
    show("Sending the M-PESA prompt…");
    fetch(form.action, {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    })
      .then(function (response) {
        return response.json().then(function (body) {
          return { ok: response.ok, status: response.status, body: body };
        });
      })
      .then(function (result) {
        button.disabled = false;
        if (!result.ok) {
          show(errorMessage(result.body), "error");
          if (result.status === 409) {
            // Not payable any more (cancelled while this page was open): show the invoice
            // as it is now, not a live Pay form under "can't be paid".
            refresh();
          }
          return;
        }
        if (result.body.outcome === "paid") {
          poll();
          return;
        }
        form.hidden = true;
        show(result.body.message);
        startPolling();
      })
      .catch(function () {
        button.disabled = false;
        show("We could not reach the server. Check your connection, then try again.", "error");
      });
  });

  retry.addEventListener("click", function () {
    retry.hidden = true;
    progress.hidden = true;
    form.hidden = false;
    button.disabled = false;
  });

  if (root.getAttribute("data-state") === "waiting") {
    startPolling();
  }
})();
