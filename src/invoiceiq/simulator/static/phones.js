// The simulator's two phones: polls the control API and renders chats and the M-PESA PIN prompt.
// Every piece of data goes into the page through textContent, never as HTML.
"use strict";

(() => {
  const BASE = document.body.dataset.base || "";
  const SHORTCODE = document.body.dataset.shortcode || "";
  const POLL_MS = 1000;
  // Statuses after which a message no longer changes; the inbox is re-read from the first
  // message that can still change, so ticks move from sent to delivered to read.
  const FINAL = new Set(["read", "failed"]);
  const TICKS = { accepted: "🕓", sent: "✓", delivered: "✓✓", read: "✓✓", failed: "⚠" };
  const MSISDN = /^254[17]\d{8}$/;
  // The simulated PIN convention (see simulator/ui.py): 4 digits other than 0000 pay.
  const GOOD_PIN = /^\d{4}$/;

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, payload) {
    const init = { method, headers: { Accept: "application/json" } };
    if (payload !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    const response = await fetch(BASE + path, init);
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const message = data && data.error && data.error.message;
      throw new ApiError(message || `HTTP ${response.status}`, response.status);
    }
    return data;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function clock(iso) {
    const when = iso ? new Date(iso) : new Date();
    if (Number.isNaN(when.getTime())) return "";
    return when.toLocaleTimeString("en-KE", {
      hour: "2-digit",
      minute: "2-digit",
      timeZone: "Africa/Nairobi",
    });
  }

  function kes(amount) {
    const value = Number(amount);
    return Number.isFinite(value) ? value.toLocaleString("en-KE") : String(amount);
  }

  function normalize(raw) {
    let digits = raw.replace(/[\s\-().]/g, "");
    if (digits.startsWith("+")) digits = digits.slice(1);
    if (/^0[17]\d{8}$/.test(digits)) digits = "254" + digits.slice(1);
    return digits;
  }

  function describe(item) {
    if (item.text) return item.text;
    const body = (item.payload && item.payload[item.type]) || {};
    if (item.type === "document") return "📄 " + (body.filename || "document");
    if (item.type === "image") return "🖼 image";
    return `[${item.type || "message"}]`;
  }

  // As WhatsApp shows a message: links can be opened, *words* are bold. Built from text nodes
  // (never HTML), and only http(s) addresses become links.
  const LINK = /(https?:\/\/[^\s<>"]+)/;
  const BOLD = /\*([^*\n]+)\*/;

  function withBold(parent, text) {
    let rest = text;
    for (let match = BOLD.exec(rest); match; match = BOLD.exec(rest)) {
      parent.append(document.createTextNode(rest.slice(0, match.index)));
      parent.append(el("strong", null, match[1]));
      rest = rest.slice(match.index + match[0].length);
    }
    parent.append(document.createTextNode(rest));
  }

  function richText(text) {
    const node = el("div", "text");
    const parts = String(text).split(LINK);
    parts.forEach((part, index) => {
      if (index % 2 === 0) {
        withBold(node, part);
        return;
      }
      const link = el("a", "link", part);
      link.href = part;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      node.append(link);
    });
    return node;
  }

  class Phone {
    constructor(section) {
      this.role = section.dataset.role;
      this.chat = section.querySelector(".chat");
      this.numberInput = section.querySelector(".number");
      this.numberError = section.querySelector(".number-error");
      this.textInput = section.querySelector(".compose-text");
      this.msisdn = "";
      this.received = [];
      this.byWamid = new Map();
      this.generation = 0;
      const stored = window.localStorage.getItem(this.storageKey());
      if (stored && MSISDN.test(stored)) this.numberInput.value = stored;
      this.setNumber(this.numberInput.value);
      this.numberInput.addEventListener("change", () => this.setNumber(this.numberInput.value));
      section.querySelector(".composer").addEventListener("submit", (event) => {
        event.preventDefault();
        this.sendText();
      });
    }

    storageKey() {
      return `invoiceiq-simulator-${this.role}`;
    }

    setNumber(raw) {
      const msisdn = normalize(raw);
      if (!MSISDN.test(msisdn)) {
        this.numberError.textContent = "A Kenyan mobile: 2547… or 2541… (12 digits), or 07…/01….";
        this.numberError.hidden = false;
        this.msisdn = "";
        this.clear();
        return;
      }
      this.numberError.hidden = true;
      this.numberInput.value = msisdn;
      if (msisdn === this.msisdn) return;
      this.msisdn = msisdn;
      window.localStorage.setItem(this.storageKey(), msisdn);
      this.clear();
    }

    clear() {
      this.generation += 1;
      this.received = [];
      this.byWamid.clear();
      this.chat.replaceChildren();
    }

    cursor() {
      const first = this.received.findIndex((m) => !FINAL.has(m.status));
      if (first === -1) {
        const last = this.received[this.received.length - 1];
        return last ? last.wamid : null;
      }
      return first > 0 ? this.received[first - 1].wamid : null;
    }

    async poll() {
      if (!this.msisdn) return;
      const generation = this.generation;
      const after = this.cursor();
      const query = after ? `?after=${encodeURIComponent(after)}` : "";
      let items;
      try {
        items = await api("GET", `/phones/${this.msisdn}/inbox${query}`);
      } catch (error) {
        // An unknown cursor means the simulator was reset: start again from nothing.
        if (error instanceof ApiError && error.status >= 400 && error.status < 500) this.clear();
        return;
      }
      if (generation !== this.generation) return;
      for (const item of items) this.receive(item);
    }

    // Bubbles are kept in time order: a message the business sent before the phone wrote may
    // only be seen at the next poll, after the phone's own bubble was drawn.
    append(node, iso) {
      const at = iso ? Date.parse(iso) : Date.now();
      node.dataset.at = String(Number.isNaN(at) ? Date.now() : at);
      const nearBottom =
        this.chat.scrollHeight - this.chat.scrollTop - this.chat.clientHeight < 80;
      const later = Array.from(this.chat.children).find(
        (child) => Number(child.dataset.at) > Number(node.dataset.at),
      );
      this.chat.insertBefore(node, later || null);
      if (nearBottom) this.chat.scrollTop = this.chat.scrollHeight;
    }

    receive(item) {
      const known = this.byWamid.get(item.wamid);
      if (known) {
        this.setStatus(known, item);
        return;
      }
      const node = el("li", "msg in");
      node.dataset.testid = "msg-in";
      node.dataset.wamid = item.wamid;
      if (item.template) node.append(el("div", "tag", `Template · ${item.template.name}`));
      node.append(item.text ? richText(item.text) : el("div", "text", describe(item)));
      const buttons = el("div", "buttons");
      const kind = item.template ? "template" : "reply";
      for (const button of item.buttons || []) {
        const tap = el("button", "reply", button.title);
        tap.type = "button";
        tap.dataset.testid = "reply-button";
        tap.dataset.buttonId = button.id;
        tap.addEventListener("click", () => this.tap(button, kind));
        buttons.append(tap);
      }
      const meta = el("div", "meta");
      meta.append(el("span", "time", clock(item.at)));
      const ticks = el("span", "ticks");
      ticks.dataset.testid = "status";
      meta.append(ticks);
      node.append(meta);
      if (buttons.childElementCount) node.append(buttons);
      const entry = { wamid: item.wamid, status: null, node, ticks, buttons };
      this.received.push(entry);
      this.byWamid.set(item.wamid, entry);
      this.setStatus(entry, item);
      this.append(node, item.at);
    }

    setStatus(entry, item) {
      if (entry.status === item.status) return;
      entry.status = item.status;
      entry.ticks.textContent = TICKS[item.status] || "";
      entry.ticks.className = `ticks status-${item.status || "none"}`;
      entry.ticks.title = item.status || "";
      entry.node.dataset.status = item.status || "";
      if (item.status === "failed") {
        entry.node.classList.add("failed");
        const code = item.error_code ? ` (error ${item.error_code})` : "";
        entry.node.append(el("div", "failure", `Not delivered to this phone${code}`));
        for (const button of entry.buttons.children) button.disabled = true;
      }
    }

    outgoing(text) {
      const node = el("li", "msg out");
      node.dataset.testid = "msg-out";
      node.append(el("div", "text", text));
      const meta = el("div", "meta");
      meta.append(el("span", "time", clock()));
      const state = el("span", "ticks", "🕓");
      meta.append(state);
      node.append(meta);
      this.append(node);
      return {
        done: (result) => {
          node.dataset.wamid = result.wamid;
          node.dataset.webhookStatus = String(result.webhook_status);
          const ok = result.webhook_status >= 200 && result.webhook_status < 300;
          state.textContent = "✓✓";
          state.className = "ticks status-read";
          state.title = `app answered HTTP ${result.webhook_status}`;
          if (result.webhook_status === 0) {
            node.append(el("div", "failure", "The app could not be reached"));
          } else if (!ok) {
            node.append(el("div", "failure", `The app answered HTTP ${result.webhook_status}`));
          }
        },
        failed: (message) => {
          state.textContent = "⚠";
          node.classList.add("failed");
          node.append(el("div", "failure", `Not sent: ${message}`));
        },
      };
    }

    async write(payload, shown) {
      if (!this.msisdn) return;
      const bubble = this.outgoing(shown);
      try {
        bubble.done(await api("POST", `/phones/${this.msisdn}/messages`, payload));
      } catch (error) {
        bubble.failed(error.message);
      }
    }

    sendText() {
      const text = this.textInput.value.trim();
      if (!text) return;
      this.textInput.value = "";
      this.write({ text }, text);
    }

    tap(button, kind) {
      this.write({ button_id: button.id, kind }, button.title);
    }

    note(text) {
      const node = el("li", "msg system", text);
      node.dataset.testid = "msg-system";
      this.append(node);
    }
  }

  class PinPrompt {
    constructor(phone, root) {
      this.phone = phone;
      this.root = root;
      this.amount = root.querySelector('[data-testid="stk-amount"]');
      this.account = root.querySelector('[data-testid="stk-account"]');
      this.shortcode = root.querySelector('[data-testid="stk-shortcode"]');
      this.pin = root.querySelector(".stk-pin");
      this.expiry = root.querySelector(".stk-expiry");
      this.current = null;
      this.timeoutS = null;
      this.answered = new Set();
      root.querySelector(".stk-box").addEventListener("submit", (event) => {
        event.preventDefault();
        this.answer(true);
      });
      root.querySelector(".stk-cancel").addEventListener("click", () => this.answer(false));
    }

    async poll() {
      const msisdn = this.phone.msisdn;
      if (!msisdn) {
        this.close(null);
        return;
      }
      let prompts;
      try {
        prompts = await api("GET", `/mpesa/prompts?phone=${msisdn}&state=open`);
      } catch (_) {
        return;
      }
      if (msisdn !== this.phone.msisdn) return;
      const open = prompts.filter((p) => !this.answered.has(p.checkout_request_id));
      if (!open.length) {
        if (this.current) this.close("The M-PESA prompt closed (timed out or answered elsewhere).");
        return;
      }
      if (!this.current || this.current.checkout_request_id !== open[0].checkout_request_id) {
        this.show(open[0]);
      }
      this.tick();
    }

    show(prompt) {
      this.current = prompt;
      this.amount.textContent = kes(prompt.amount);
      this.account.textContent = prompt.account_reference || "";
      this.shortcode.textContent = prompt.business_short_code || SHORTCODE;
      this.pin.value = "";
      this.expiry.textContent = "";
      this.root.hidden = false;
      this.pin.focus();
      api("GET", "/config")
        .then((config) => {
          this.timeoutS = config.prompt_timeout_s;
          this.tick();
        })
        .catch(() => {});
    }

    tick() {
      if (!this.current || !this.timeoutS || !this.current.at) return;
      const ends = new Date(this.current.at).getTime() + this.timeoutS * 1000;
      const left = Math.max(0, Math.round((ends - Date.now()) / 1000));
      this.expiry.textContent = `Times out in ${left} s`;
    }

    close(message) {
      if (!this.current) return;
      this.current = null;
      this.root.hidden = true;
      if (message) this.phone.note(message);
    }

    async answer(ok) {
      if (!this.current) return;
      const prompt = this.current;
      const pin = this.pin.value;
      let action = "cancel";
      if (ok) action = GOOD_PIN.test(pin) && pin !== "0000" ? "accept" : "wrong_pin";
      this.answered.add(prompt.checkout_request_id);
      this.close(null);
      const words = { accept: "PIN entered", wrong_pin: "Wrong PIN entered", cancel: "Cancelled" };
      try {
        await api("POST", `/mpesa/prompts/${encodeURIComponent(prompt.checkout_request_id)}`, {
          action,
        });
        this.phone.note(`M-PESA: ${words[action]} for KES ${kes(prompt.amount)}.`);
      } catch (error) {
        this.phone.note(`M-PESA: ${error.message}`);
      }
    }

    reset() {
      this.answered.clear();
      this.current = null;
      this.root.hidden = true;
    }
  }

  const phones = Array.from(document.querySelectorAll(".phone"), (s) => new Phone(s));
  const customer = phones.find((p) => p.role === "customer");
  const prompt = new PinPrompt(customer, document.querySelector('[data-testid="stk-prompt"]'));

  document.querySelector('[data-testid="reset"]').addEventListener("click", async () => {
    try {
      await api("POST", "/reset");
    } finally {
      for (const phone of phones) phone.clear();
      prompt.reset();
    }
  });

  async function loop() {
    if (!document.hidden) {
      await Promise.all([...phones.map((p) => p.poll()), prompt.poll()]);
    }
    window.setTimeout(loop, POLL_MS);
  }
  loop();
})();
