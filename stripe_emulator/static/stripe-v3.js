/*
 * The Stripe emulator's stand-in for Stripe.js v3 (served at /js.stripe.com/v3/ by the emulator's
 * proxy). It implements the calls a site makes with real Stripe.js, with the same arguments and
 * the same {paymentIntent} / {paymentMethod} / {setupIntent} / {error} results:
 *
 *   stripe.elements().create("card")            five plain inputs a test can fill (placeholders
 *                                               number, exp_month, exp_year, cvc, postal_code)
 *   stripe.createPaymentMethod({type, card})     also the older ("card", element, data) form
 *   stripe.confirmCardPayment(secret, data?)     card details or a saved card, setup_future_usage,
 *                                               and one 3-D Secure challenge when the bank asks
 *   stripe.handleNextAction({clientSecret}), stripe.handleCardAction(secret)
 *   stripe.retrievePaymentIntent(secret), stripe.confirmCardSetup(secret, data)
 *
 * The 3-D Secure challenge is a dialog with "Complete authentication" and "Fail authentication".
 * Card details go from the browser to the emulator only, as they go to Stripe only.
 */
(function () {
  "use strict";
  const BASE = new URL(document.currentScript.src).origin;

  function flatten(value, prefix, pairs) {
    if (value === undefined || value === null) return pairs;
    if (typeof value === "object") {
      Object.keys(value).forEach((key) => flatten(value[key], prefix ? `${prefix}[${key}]` : key, pairs));
    } else {
      pairs.push([prefix, String(value)]);
    }
    return pairs;
  }

  async function call(method, path, params) {
    const query = new URLSearchParams(flatten(params, "", []));
    const response = await fetch(method === "GET" ? `${BASE}${path}?${query}` : `${BASE}${path}`, {
      method,
      headers: method === "GET" ? {} : {"Content-Type": "application/x-www-form-urlencoded"},
      body: method === "GET" ? undefined : query.toString(),
    });
    const body = await response.json().catch(() => ({}));
    return {ok: response.ok && !body.error, body};
  }

  function intentId(clientSecret) {
    return String(clientSecret || "").split("_secret_")[0];
  }

  class CardElement {
    constructor() {
      this.inputs = {};
      this.handlers = {};
      this.container = null;
    }
    mount(target) {
      const node = typeof target === "string" ? document.querySelector(target) : target;
      if (!node) throw new Error("stripe-emulator: mount() needs an element or a selector");
      this.container = document.createElement("div");
      this.container.className = "stripe-emulator-card";
      // Named for screen readers as Stripe's own card fields are.
      [["number", 19, "Card number"], ["exp_month", 2, "Expiry month"], ["exp_year", 4, "Expiry year"],
       ["cvc", 4, "Security code (CVC)"], ["postal_code", 6, "Postal code"]].forEach(([name, size, label]) => {
        const input = document.createElement("input");
        input.type = "text";
        input.placeholder = name;
        input.setAttribute("aria-label", label);
        input.size = size;
        input.autocomplete = "off";
        input.addEventListener("input", () => (this.handlers.change || []).forEach((handler) => handler({complete: this.complete()})));
        this.inputs[name] = input;
        this.container.appendChild(input);
      });
      node.appendChild(this.container);
    }
    on(event, handler) {
      (this.handlers[event] = this.handlers[event] || []).push(handler);
    }
    complete() {
      return Object.values(this.inputs).slice(0, 4).every((input) => input.value.trim());
    }
    details() {
      const year = this.inputs.exp_year.value.trim();
      return {
        card: {
          number: this.inputs.number.value.replace(/\D/g, ""),
          exp_month: this.inputs.exp_month.value.trim(),
          exp_year: year.length === 2 ? `20${year}` : year,
          cvc: this.inputs.cvc.value.trim(),
        },
        postal_code: this.inputs.postal_code.value.trim(),
      };
    }
    focus() {
      if (this.inputs.number) this.inputs.number.focus();
    }
    clear() {
      Object.values(this.inputs).forEach((input) => (input.value = ""));
    }
    unmount() {
      if (this.container) this.container.remove();
      this.container = null;
    }
    destroy() {
      this.unmount();
    }
  }

  function paymentMethodData(method) {
    const element = method.card;
    const details = element instanceof CardElement ? element.details() : {card: element, postal_code: ""};
    const billing = Object.assign({}, method.billing_details || {});
    if (details.postal_code) billing.address = Object.assign({postal_code: details.postal_code}, billing.address || {});
    return {type: "card", card: details.card, billing_details: billing};
  }

  function challenge() {
    return new Promise((resolve) => {
      const box = document.createElement("div");
      box.setAttribute("role", "dialog");
      box.setAttribute("aria-label", "3-D Secure (Stripe emulator)");
      Object.assign(box.style, {
        position: "fixed", inset: "30% 10% auto 10%", padding: "16px", background: "#fff",
        border: "2px solid #635bff", borderRadius: "8px", zIndex: 2147483647, textAlign: "center",
      });
      const text = document.createElement("p");
      text.textContent = "3-D Secure: your bank asks you to confirm this payment.";
      box.appendChild(text);
      [["Complete authentication", true], ["Fail authentication", false]].forEach(([label, outcome]) => {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = label;
        button.style.margin = "4px";
        button.addEventListener("click", () => {
          box.remove();
          resolve(outcome);
        });
        box.appendChild(button);
      });
      document.body.appendChild(box);
    });
  }

  window.Stripe = function (key) {
    async function finish(intent, clientSecret) {
      if (intent.status === "requires_payment_method" && intent.last_payment_error) {
        return {error: Object.assign({}, intent.last_payment_error, {payment_intent: intent})};
      }
      if (intent.status !== "requires_action") return {paymentIntent: intent};
      const success = await challenge();
      const result = await call("POST", `/v1/payment_intents/${intent.id}/_authenticate`, {
        key, client_secret: clientSecret, success,
      });
      if (!result.ok) return {error: result.body.error};
      if (result.body.status === "requires_payment_method") {
        return {
          error: {
            type: "card_error",
            code: "payment_intent_authentication_failure",
            message: "We are unable to authenticate your payment method. Please choose a different payment method and try again.",
            payment_intent: result.body,
          },
        };
      }
      return {paymentIntent: result.body};
    }

    return {
      elements() {
        let card = null;
        return {
          create(type) {
            if (type !== "card") throw new Error(`stripe-emulator: only the card element exists, not ${type}`);
            card = new CardElement();
            return card;
          },
          getElement() {
            return card;
          },
        };
      },

      async createPaymentMethod(first, element, data) {
        const method = typeof first === "string" ? Object.assign({type: first, card: element}, data || {}) : first;
        const result = await call("POST", "/v1/payment_methods", Object.assign({key}, paymentMethodData(method)));
        return result.ok ? {paymentMethod: result.body} : {error: result.body.error};
      },

      async confirmCardPayment(clientSecret, data) {
        const params = {key, client_secret: clientSecret};
        const method = data && data.payment_method;
        if (typeof method === "string") params.payment_method = method;
        else if (method) params.payment_method_data = paymentMethodData(method);
        if (data && data.setup_future_usage) params.setup_future_usage = data.setup_future_usage;
        const result = await call("POST", `/v1/payment_intents/${intentId(clientSecret)}/confirm`, params);
        if (!result.ok) return {error: result.body.error};
        return finish(result.body, clientSecret);
      },

      async handleNextAction(options) {
        return this.handleCardAction(options.clientSecret);
      },

      async handleCardAction(clientSecret) {
        const result = await call("GET", `/v1/payment_intents/${intentId(clientSecret)}`, {key, client_secret: clientSecret});
        if (!result.ok) return {error: result.body.error};
        return finish(result.body, clientSecret);
      },

      async retrievePaymentIntent(clientSecret) {
        const result = await call("GET", `/v1/payment_intents/${intentId(clientSecret)}`, {key, client_secret: clientSecret});
        return result.ok ? {paymentIntent: result.body} : {error: result.body.error};
      },

      async confirmCardSetup(clientSecret, data) {
        const id = intentId(clientSecret);
        const params = {key, client_secret: clientSecret, use_stripe_sdk: true};
        const method = data && data.payment_method;
        if (typeof method === "string") params.payment_method = method;
        else if (method) params.payment_method_data = paymentMethodData(method);
        let result = await call("POST", `/v1/setup_intents/${id}/confirm`, params);
        if (result.ok && result.body.status === "requires_action") {
          // A failed challenge leaves the SetupIntent as it is, for another card (as Stripe does).
          if (!(await challenge())) {
            return {error: {type: "card_error", code: "setup_intent_authentication_failure", message: "We are unable to authenticate your payment method. Please choose a different payment method and try again."}};
          }
          result = await call("POST", `/v1/setup_intents/${id}/confirm`, {key, client_secret: clientSecret, use_stripe_sdk: true});
        }
        return result.ok ? {setupIntent: result.body} : {error: result.body.error};
      },
    };
  };
})();
