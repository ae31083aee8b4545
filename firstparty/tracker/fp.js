/*
 * firstparty fp.js: the first-party browser tracker. Plain JavaScript, no dependencies.
 * Served minified and gzipped at /fp.js (and /fp.<hash>.js); see docs/tracker.md.
 *
 * One-line snippet:
 *   <script async src="https://t.example.com/fp.js" data-key="WRITE_KEY"></script>
 *
 * Stub variant: calls made before the script has loaded are queued, and track() still
 * returns the event_id at once (put it before the line above):
 *   <script>!function(w,f){f=w.firstparty=w.firstparty||{q:[]};"track page identify consent".split(" ").forEach(function(m){f[m]=f[m]||function(){var a=[].slice.call(arguments),o;if(m=="track"){o=a[2]=Object.assign({},a[2]);o.event_id=o.event_id||(w.crypto&&crypto.randomUUID?crypto.randomUUID():Date.now()+"-"+Math.random().toString(36).slice(2))}f.q.push([m,a]);return o&&o.event_id}})}(window)</script>
 *
 * Script attributes: data-key (write key), data-host (collector base URL; default: where this
 * script came from, so /fp/fp.js behind the site's proxy posts to /fp/v1/events),
 * data-auto="false" (no automatic page events).
 *
 * Each page event's id is firstparty.pageEventId and the detail of a `fp:page` window event,
 * so a pixel's PageView can share it (docs/tracker.md).
 */
(() => {
  try {
    const w = window,
      d = document,
      fp = (w.firstparty = w.firstparty || {});
    if (fp.loaded) return;
    const safe = f => (...a) => {
      try {
        return f(...a);
      } catch {}
    };
    const CONSENT = 'ad_user_data ad_personalization ad_storage analytics_storage'.split(' '),
      USER = 'email phone first_name last_name city state zip country date_of_birth gender external_id'.split(' '),
      // Pixel cookie `_<name>` -> context.<name>
      PIXELS = ['fbp', 'fbc', 'ttp', 'ga', 'gcl_aw'],
      // Values the server would refuse for certain (it judges the rest and names them back).
      VALID = {
        email: /^[^\s@]+@[^\s@]+$/,
        phone: /^\+?[\d\s().-]{6,}$/,
        gender: /^(f|m|(fe)?male|(wo)?man)$/i
      };
    let endpoint = '',
      consent = {},
      ref = d.referrer,
      user,
      last;

    // Settings come from the script tag, or from the stub object (firstparty.key, .host, .auto).
    const s = d.currentScript || d.querySelector('script[data-key][src*="fp"]'),
      attr = n => (s && s.getAttribute('data-' + n)) || fp[n],
      key = attr('key'),
      base = attr('host') || (s ? new URL('.', s.src).href : '/');
    // The key rides in the query string: a custom header would force a CORS preflight, and
    // sendBeacon cannot set headers at all.
    if (key) endpoint = base.replace(/\/?$/, '/v1/events?key=') + encodeURIComponent(key);

    const uuid = () => {
      try {
        return crypto.randomUUID();
      } catch {
        // randomUUID exists only in secure contexts; a blob URL ends in a random UUID anywhere
        // (and is released with the page).
        return URL.createObjectURL(new Blob()).slice(-36);
      }
    };

    // Values the server would refuse are dropped here, so one bad field never loses the event.
    const pick = (from, keys, map = v => v) => {
      const out = {};
      for (const k of keys) {
        const v = map(from && from[k]);
        if (v != null && v !== '' && !(VALID[k] && !VALID[k].test(String(v).trim()))) out[k] = String(v).slice(0, 256);
      }
      return out;
    };

    const pixels = () => {
      const out = {},
        ga = [];
      for (const k of PIXELS) {
        const m = d.cookie.match('(?:^|; )_' + k + '=([^;]{1,256})');
        if (m) out[k] = m[1];
      }
      // gtag's session per GA4 stream: _ga_<container>=GS1.1.<id>.<n>… or GS2.1.s<id>$o<n>…
      d.cookie.replace(/(?:^|; )_ga_(\w+)=GS\d\.\d\.s?(\d+)[.$]o?(\d+)/g, (m, c, id, n) => ga.push(c + ':' + id + ':' + n));
      if (ga.length) out.ga_session = ga.join().slice(0, 256);
      return out;
    };

    // A first visit has no visitor cookie yet: its first request goes alone and the others wait
    // for the answer (which sets the cookie), so the server mints one visitor, not several.
    let wait, gate, seen;
    try {
      gate = !(seen = localStorage.fp_seen);
    } catch {}
    const flush = () => {
      const q = wait || [];
      wait = 0;
      q.map(go => go());
    };

    // The answer names fields the server dropped (202 `warnings`) or refused (4xx `details`):
    // they leave the remembered user, and a refused event goes again without them (within its
    // 3 tries).
    const read = (e, status, a, n) => {
      let bad = 0;
      for (const x of (a && (a.warnings || a.details)) || []) {
        const k = (/^user\.(\w+)/.exec(x.field) || [])[1];
        if (k && e.user) bad = delete e.user[k];
        if (k && user) delete user[k];
      }
      if (status < 300) seen = localStorage.fp_seen = 1;
      if (status > 399 && bad && n < 2) send(e, n + 1);
    };

    // An answer of 429 or 503 says "later": the event (the same event_id, so a copy that did
    // land is deduplicated) goes again after Retry-After, 3 tries at most, 20 events held at
    // most (the oldest dropped); the page leaving sends the held ones at once.
    const held = [],
      hold = (e, n, r) => {
        gate = !seen; // on a first visit, the next request goes alone again
        if (n > 1) return;
        const go = () => go.done || send(e, n + 1, (go.done = 1));
        if (held.push(go) > 20) held.shift().done = 1;
        setTimeout(go, (+r.headers.get('Retry-After') || 1) * 1e3);
      };

    // n: the tries of this event before this one.
    const send = (e, n = 0) => {
      if (!endpoint) return;
      if (wait) return wait.push(() => send(e, n));
      if (gate) wait = [];
      gate = 0;
      const data = JSON.stringify(e);
      try {
        // A string body goes as text/plain, a CORS-safelisted type: a "simple" request with no
        // preflight, which matters while the page unloads. keepalive lets it outlive the page.
        fetch(endpoint, { method: 'POST', body: data, keepalive: true, credentials: 'include' })
          .then(r => (/429|503/.test(r.status) ? hold(e, n, r) : r.json().then(a => read(e, r.status, a, n))))
          .then(flush, flush);
      } catch {
        try {
          navigator.sendBeacon(endpoint, data);
        } catch {}
        flush();
      }
    };

    const emit = (type, name, props, o) => {
      o = o || {};
      const id = String(o.event_id || uuid()),
        u = o.user ? { ...user, ...pick(o.user, USER) } : user,
        e = {
          type,
          event_id: id,
          timestamp: new Date().toISOString(),
          url: location.href,
          referrer: ref,
          title: d.title,
          properties: props && typeof props == 'object' && !Array.isArray(props) ? props : {},
          context: pixels(),
          user: u
        };
      if (name) e.name = String(name);
      if (Object.keys(consent).length) e.consent = consent;
      send(e);
      if (type == 'page') {
        fp.pageEventId = id;
        dispatchEvent(new CustomEvent('fp:page', { detail: id }));
      }
      return id;
    };

    const setConsent = c =>
      (consent = { ...consent, ...pick(c, CONSENT, v => (v === true ? 'granted' : v === false ? 'denied' : v == 'granted' || v == 'denied' ? v : null)) });

    const path = () => location.href.split('#')[0],
      // Routers set the title after pushState, so the page event waits for the current task.
      navigated = safe(() => {
        if (path() == last) return;
        ref = last;
        last = path();
        fp.page();
      });

    fp.track = safe((name, props, o) => emit('track', name, props, o));
    fp.page = safe((props, o) => emit('page', 0, props, o));
    fp.identify = safe((u, o) => {
      user = { ...user, ...pick(typeof u == 'object' ? u : { external_id: u }, USER) };
      return emit('identify', 0, 0, o);
    });
    fp.consent = safe(c => {
      setConsent(c);
      try {
        localStorage.fp_consent = JSON.stringify(consent);
      } catch {}
      return { ...consent };
    });
    fp.loaded = true;

    try {
      setConsent(JSON.parse(localStorage.fp_consent || '{}'));
    } catch {}
    for (const c of fp.q || []) safe(() => fp[c[0]](...c[1]))();
    fp.q = [];
    addEventListener('pagehide', () => {
      gate = 0;
      flush();
      held.map(go => go());
    });
    last = path();
    if (attr('auto') + '' == 'false') return;
    safe(() => {
      for (const m of ['pushState', 'replaceState']) {
        const original = history[m];
        history[m] = function () {
          setTimeout(navigated);
          return original.apply(this, arguments);
        };
      }
      addEventListener('popstate', () => setTimeout(navigated));
    })();
    fp.page();
  } catch {}
})();
