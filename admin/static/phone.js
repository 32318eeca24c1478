// The console's phone page: a USSD dial pad, the SMS inbox, M-PESA prompts and a Paybill
// payment for one number. Plain script, no framework: the console works offline.
// Every change is a POST with the page's CSRF token; text from the server is only ever
// set as textContent, never parsed as HTML.
(function () {
  "use strict";
  var page = document.getElementById("phone-page");
  if (!page) { return; }
  var urls = page.dataset;
  var $ = function (id) { return document.getElementById(id); };
  var token = document.querySelector("#phone-token input[name=csrf_token]").value;
  var number = $("phone-number"), screen = $("screen"), input = $("ussd-input");
  var send = $("send"), cancel = $("cancel"), dial = $("dial"), error = $("phone-error");
  // [outcome, label] pairs, in the order the buttons show.
  var answers = $("prompts") ? JSON.parse($("prompts").dataset.answers) : [];
  var POLL_MS = 3000;

  var phone = "";          // the number the inbox and prompts are shown for
  var session = null;      // the USSD session id, null when no session is open
  var entries = [];        // what the member typed this session, joined by "*"
  var shown = {};          // each list's last JSON, so an unchanged list is not redrawn
  var owner = null;        // the member who owns `phone`, when known
  var hops = 0;            // hops sent this session, and when it started (for /ussd/events)
  var started = 0;

  function post(url, fields) {
    var body = new URLSearchParams(fields);
    body.set("csrf_token", token);
    return fetch(url, { method: "POST", body: body, credentials: "same-origin" })
      .then(function (r) {
        return r.json().catch(function () { return { error: "HTTP " + r.status }; });
      });
  }

  // Errors show in the card they concern: USSD (#phone-error) or M-PESA (#mpesa-error).
  function say(message, where) { (where || error).textContent = message || ""; }

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined) { node.textContent = text; }
    if (cls) { node.className = cls; }
    return node;
  }

  // -- USSD ---------------------------------------------------------------------------
  function open(on) {
    input.disabled = send.disabled = cancel.disabled = !on;
    if (on) { input.value = ""; input.focus(); }
  }

  // The session is over: tell the server as Africa's Talking's end-of-session notice
  // does, so the member's page lists it ("Success" for the menu's END, "Incomplete" when
  // the member cancels). What was typed is never sent.
  function ended(id, status, last) {
    if (!id) { return; }
    post(urls.ussdEndUrl, {
      phone: phone, session: id, status: status, hops: String(hops),
      duration_ms: String(Math.max(0, Date.now() - started)), last: last || ""
    }).then(function (answer) { if (answer.error) { say(answer.error); } });
  }

  function hop(text) {
    say("");
    var fields = { phone: phone, text: text };
    if (session) { fields.session = session; } else { hops = 0; started = Date.now(); }
    hops += 1;
    return post(urls.ussdUrl, fields).then(function (answer) {
      if (answer.error) { say(answer.error); open(false); session = null; return; }
      session = answer.end ? null : answer.session;
      if (answer.end) { ended(answer.session, "Success", "END " + answer.screen); }
      screen.textContent = answer.screen;
      screen.classList.toggle("ended", answer.end);
      open(!answer.end);
      refresh();  // a hop may have sent an SMS or an M-PESA prompt
    }, function () { say("The server did not answer."); });
  }

  dial.addEventListener("click", function () {
    choose();
    if (!phone) { say("Type a phone number first."); return; }
    ended(session, "Incomplete", "CON " + screen.textContent);  // dialling again hangs up
    session = null;
    entries = [];
    screen.textContent = "Dialling…";
    hop("");
  });

  $("ussd-form").addEventListener("submit", function (event) {
    event.preventDefault();
    if (!session) { return; }
    entries.push(input.value.trim());
    hop(entries.join("*"));
  });

  cancel.addEventListener("click", function () {
    ended(session, "Incomplete", "CON " + screen.textContent);
    session = null;
    entries = [];
    screen.textContent = "Session cancelled.";
    screen.classList.add("ended");
    open(false);
  });

  // -- which number ---------------------------------------------------------------------
  // Another number is another phone: its own session, inbox, prompts and account.
  function choose() {
    var typed = number.value.trim();
    if (typed === phone) { return; }
    ended(session, "Incomplete", "CON " + screen.textContent);  // a new number hangs up the old
    phone = typed;
    shown = {};
    session = null;
    entries = [];
    open(false);
    screen.textContent = "Dial " + dial.dataset.code + " to start.";
    screen.classList.remove("ended");
    var account = $("paybill-account");
    if (account && owner && account.value === owner.member_no) { account.value = ""; }
    owner = null;
    $("phone-owner").textContent = "\u00a0";
    refresh();
  }
  number.addEventListener("change", choose);

  // -- what the phone shows ---------------------------------------------------------------
  function redraw(key, data, draw) {
    var json = JSON.stringify(data);
    if (shown[key] === json) { return; }
    shown[key] = json;
    draw(data);
  }

  function drawInbox(sms) {
    var list = $("sms-list");
    list.replaceChildren();
    if (!sms.messages.length) { list.appendChild(el("p", "No messages.", "text-muted")); return; }
    sms.messages.forEach(function (m) {
      var item = el("div", undefined, "sms");
      item.appendChild(el("div", m.text, "sms-text"));
      item.appendChild(el("div", m.at + " · from " + m.from + " · " + m.status, "meta"));
      list.appendChild(item);
    });
    if (sms.total > sms.messages.length) {
      list.appendChild(el("p", "Newest " + sms.messages.length + " of " + sms.total + ".", "meta"));
    }
  }

  function drawPrompts(pending) {
    var list = $("prompts");
    list.replaceChildren();
    if (!pending.length) { list.appendChild(el("p", "None.", "text-muted")); return; }
    pending.forEach(function (p) {
      var item = el("div", undefined, "prompt");
      item.appendChild(el("div", "Pay " + p.amount + " to account " + p.reference + " (" + p.description + ")?"));
      item.appendChild(el("div", p.at, "meta"));
      answers.forEach(function (pair) {
        var outcome = pair[0];
        var button = el("button", pair[1], "btn btn-sm mr-1 mb-1 " +
          (outcome === "success" ? "btn-success" : "btn-outline-secondary"));
        button.type = "button";
        button.dataset.outcome = outcome;
        button.addEventListener("click", function () {
          button.disabled = true;
          post(urls.stkUrl, { checkout_id: p.id, outcome: outcome }).then(function (answer) {
            say(answer.error, $("mpesa-error"));
            refresh();
          });
        });
        item.appendChild(button);
      });
      list.appendChild(item);
    });
  }

  function drawAnswered(rows) {
    var list = $("answered");
    list.replaceChildren();
    rows.forEach(function (p) {
      list.appendChild(el("div", p.at + " · " + p.amount + " · " + p.reference + " · " +
        p.outcome + (p.receipt ? " · " + p.receipt : ""), "meta"));
    });
  }

  function drawPaybill(rows) {
    var list = $("paybill-list");
    list.replaceChildren();
    rows.forEach(function (p) {
      list.appendChild(el("div", p.at + " · " + p.amount + " to " + p.account + " · " +
        p.status + " · " + p.id, "meta"));
    });
  }

  function refresh() {
    if (!phone) { return; }
    var asked = phone;
    fetch(urls.stateUrl + "?phone=" + encodeURIComponent(phone), { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (state) {
        if (asked !== phone) { return; }  // the number changed while we waited
        if (state.error) { say(state.error); return; }
        owner = state.member;
        $("phone-owner").textContent = state.phone + (owner
          ? " · " + owner.name + (owner.member_no ? " (" + owner.member_no + ")" : "")
          : " · not a member");
        if (state.sms) { redraw("sms", state.sms, drawInbox); }
        if (state.mpesa) {
          var here = $("answer-here");
          here.disabled = false;
          here.checked = state.mpesa.answer_here;
          redraw("pending", state.mpesa.pending, drawPrompts);
          redraw("answered", state.mpesa.answered, drawAnswered);
          redraw("paybill", state.mpesa.paybill, drawPaybill);
          var account = $("paybill-account");
          if (!account.value && owner && owner.member_no) { account.value = owner.member_no; }
        }
      }, function () { /* the next poll tries again */ });
  }

  // -- M-PESA controls --------------------------------------------------------------------
  if ($("answer-here")) {
    $("answer-here").addEventListener("change", function (event) {
      post(urls.answerHereUrl, { phone: phone, on: event.target.checked ? "1" : "0" })
        .then(function (answer) { say(answer.error, $("mpesa-error")); refresh(); });
    });
    $("paybill-form").addEventListener("submit", function (event) {
      event.preventDefault();
      choose();
      if (!phone) { say("Type a phone number first.", $("mpesa-error")); return; }
      post(urls.paybillUrl, {
        phone: phone,
        amount: $("paybill-amount").value,
        account: $("paybill-account").value
      }).then(function (answer) {
        say(answer.error, $("mpesa-error"));
        if (!answer.error) { $("paybill-amount").value = ""; }
        refresh();
      });
    });
  }

  window.setInterval(refresh, POLL_MS);
})();
