import Mustache

/// The page's templates, stylesheet and script, compiled into the binary: the operator serves every asset itself
/// (no CDN, no Node toolchain). `{{x}}` escapes HTML; `{{{x}}}` is used only for markup rendered here.
enum Templates {
    static let library: MustacheLibrary = {
        var library = MustacheLibrary()
        for (name, text) in [
            ("layout", layout), ("home", home), ("row", row), ("detail", detail), ("detailBody", detailBody), ("message", message),
            ("environment", environment),
        ] {
            do {
                try library.register(text, named: name)
            } catch {
                preconditionFailure("template \(name) does not parse: \(error)")
            }
        }
        return library
    }()

    static func render(_ name: String, _ context: [String: Any]) -> String {
        library.render(context, withTemplate: name) ?? ""
    }

    static let layout = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>{{title}} · Meteor Shower</title>
        {{#refresh}}<meta http-equiv="refresh" content="{{refresh}}">{{/refresh}}
        <link rel="stylesheet" href="/static/shower.css">
        <script src="/static/shower.js" defer></script>
        </head>
        <body data-events="{{events}}">
        <a class="skip" href="#main">Skip to content</a>
        <header class="top">
        <a class="brand" href="/"><span aria-hidden="true">☄</span> Meteor Shower</a>
        <span class="who">{{#user}}Signed in as <strong>{{user}}</strong>{{/user}}{{^user}}namespace <strong>{{namespace}}</strong>{{/user}}</span>
        </header>
        <main id="main">
        <p class="notice" id="connection" role="status" hidden>Live updates paused: reconnecting to the operator…</p>
        {{{content}}}
        </main>
        <p class="sr-only" role="status" aria-live="polite" id="live"></p>
        <footer>Served by meteor-operator {{version}} · live updates from the operator's cache</footer>
        </body>
        </html>
        """

    static let home = """
        <section class="card" aria-labelledby="submit-title">
        <h1 id="submit-title">Build a notebook repository</h1>
        <p>Paste the git URL of a repository with notebooks. Meteor builds a JupyterBook site and a JupyterHub notebook image from it.</p>
        {{#submitRefused}}<p class="notice" role="note">{{submitRefused}}</p>{{/submitRefused}}
        {{^submitRefused}}
        <form method="post" action="/meteors" id="submit-form" novalidate>
        <input type="hidden" name="csrf" value="{{csrf}}">
        {{#formError}}<p class="error" role="alert" id="form-error">{{formError}}</p>{{/formError}}
        <div class="field">
        <label for="url">Repository URL</label>
        <input type="url" id="url" name="url" value="{{form.url}}" required maxlength="2048" pattern="https?://.+" placeholder="https://github.com/org/repo" autocomplete="url" inputmode="url"{{#errors.url}} aria-invalid="true" aria-describedby="url-error"{{/errors.url}}>
        {{#errors.url}}<p class="error" id="url-error">{{errors.url}}</p>{{/errors.url}}
        </div>
        <div class="field">
        <label for="ref">Branch, tag or commit</label>
        <input type="text" id="ref" name="ref" value="{{form.ref}}" required maxlength="255" pattern="[A-Za-z0-9._/+@#,\\-]+" autocapitalize="off" spellcheck="false"{{#errors.ref}} aria-invalid="true" aria-describedby="ref-error"{{/errors.ref}}>
        {{#errors.ref}}<p class="error" id="ref-error">{{errors.ref}}</p>{{/errors.ref}}
        </div>
        <fieldset class="field"{{#errors.pipelines}} aria-describedby="pipelines-error"{{/errors.pipelines}}>
        <legend>Pipelines</legend>
        <label class="check"><input type="checkbox" name="pipelines[]" value="jupyterbook"{{#form.jupyterbook}} checked{{/form.jupyterbook}}> JupyterBook site</label>
        <label class="check"><input type="checkbox" name="pipelines[]" value="jupyterhub"{{#form.jupyterhub}} checked{{/form.jupyterhub}}> JupyterHub notebook image</label>
        {{#errors.pipelines}}<p class="error" id="pipelines-error">{{errors.pipelines}}</p>{{/errors.pipelines}}
        </fieldset>
        <div class="field">
        <label for="ttl">Keep for</label>
        <select id="ttl" name="ttl" data-min="0" data-max="31536000"{{#errors.ttl}} aria-invalid="true" aria-describedby="ttl-error"{{/errors.ttl}}>
        {{#ttlChoices}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{label}}</option>{{/ttlChoices}}
        </select>
        {{#errors.ttl}}<p class="error" id="ttl-error">{{errors.ttl}}</p>{{/errors.ttl}}
        </div>
        <button type="submit">Build</button>
        </form>
        {{/submitRefused}}
        </section>
        <section class="card" aria-labelledby="image-title">
        <h2 id="image-title">Or describe a notebook image</h2>
        <p>List the Python packages it needs. Meteor locks them with pip-compile, builds the image and lists it in JupyterHub's spawner.</p>
        {{^submitRefused}}
        <form method="post" action="/environments" id="environment-form" novalidate>
        <input type="hidden" name="csrf" value="{{csrf}}">
        {{#environmentError}}<p class="error" role="alert" id="environment-error">{{environmentError}}</p>{{/environmentError}}
        <div class="field">
        <label for="packages">Packages, one per line</label>
        <textarea id="packages" name="packages" rows="4" required maxlength="8192" placeholder="pandas>=2.2" spellcheck="false"{{#errors.packages}} aria-invalid="true" aria-describedby="packages-error"{{/errors.packages}}>{{environment.packages}}</textarea>
        {{#errors.packages}}<p class="error" id="packages-error">{{errors.packages}}</p>{{/errors.packages}}
        </div>
        <div class="field">
        <label for="python">Python</label>
        <select id="python" name="python"{{#errors.python}} aria-invalid="true" aria-describedby="python-error"{{/errors.python}}>
        {{#pythonChoices}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{value}}</option>{{/pythonChoices}}
        </select>
        {{#errors.python}}<p class="error" id="python-error">{{errors.python}}</p>{{/errors.python}}
        </div>
        <div class="field">
        <label for="env-name">Name <span class="hint">(optional)</span></label>
        <input type="text" id="env-name" name="name" value="{{environment.name}}" maxlength="40" pattern="[a-z0-9]([-a-z0-9]*[a-z0-9])?" autocapitalize="off" spellcheck="false" placeholder="from the first package"{{#errors.name}} aria-invalid="true" aria-describedby="name-error"{{/errors.name}}>
        {{#errors.name}}<p class="error" id="name-error">{{errors.name}}</p>{{/errors.name}}
        </div>
        <button type="submit">Build image</button>
        </form>
        {{/submitRefused}}
        </section>
        <section aria-labelledby="list-title">
        <h2 id="list-title">Meteors in {{namespace}}</h2>
        <table id="meteors">
        <thead><tr><th scope="col">Name</th><th scope="col">Repository</th><th scope="col">Phase</th><th scope="col">Pipelines</th><th scope="col">Results</th><th scope="col">Expires</th><th scope="col">Deployments</th></tr></thead>
        <tbody>
        {{#rows}}{{> row}}{{/rows}}
        </tbody>
        </table>
        <p class="empty" id="empty"{{^empty(rows)}} hidden{{/empty(rows)}}>No Meteors yet.</p>
        </section>
        """

    static let row = """
        <tr id="meteor-{{name}}" data-name="{{name}}" data-phase="{{phase}}">
        <td data-label="Name"><a href="/meteors/{{name}}">{{name}}</a></td>
        <td data-label="Repository"><span class="repo">{{url}}</span> <span class="ref">@{{ref}}</span></td>
        <td data-label="Phase"><span class="badge {{phaseClass}}" data-role="phase">{{phase}}</span>{{#problem}}<span class="problem">{{problem}}</span>{{/problem}}</td>
        <td data-label="Pipelines"><ul class="pipelines">{{#pipelines}}<li><span class="badge {{stateClass}}">{{name}}: {{state}}</span></li>{{/pipelines}}</ul></td>
        <td data-label="Results">{{#book}}<a class="book" href="{{book}}" rel="noopener noreferrer">JupyterBook site</a>{{/book}} {{#image}}<code class="image" title="notebook image">{{image}}</code>{{/image}}</td>
        <td data-label="Expires">{{#expires}}<time datetime="{{expires}}" data-expires="{{expires}}">{{expires}}</time>{{/expires}}{{^expires}}never{{/expires}}</td>
        <td data-label="Deployments">{{#deployments}}<span class="badge {{healthClass}}">{{target}}: {{sync}}/{{health}}</span> {{/deployments}}{{#fleets}}<span class="badge {{healthClass}}">{{summary}}</span> {{/fleets}}{{#rollout}}<span class="badge {{stateClass}}" data-role="rollout">rollout: {{summary}}</span>{{/rollout}}</td>
        </tr>
        """

    static let environment = """
        <p><a href="/">← Home</a></p>
        <div id="environment" data-name="{{name}}" data-phase="{{phase}}">
        <h1>{{name}} <span class="badge {{phaseClass}}" data-role="phase">{{phase}}</span></h1>
        <dl class="facts">
        <dt>Packages</dt><dd><ul class="pipelines">{{#packages}}<li><code>{{.}}</code></li>{{/packages}}</ul></dd>
        <dt>Python</dt><dd>{{python}}</dd>
        {{#ready}}<dt>Status</dt><dd data-role="ready">{{ready}}</dd>{{/ready}}
        {{#run}}<dt>PipelineRun</dt><dd><code>{{run}}</code></dd>{{/run}}
        {{#image}}<dt>Notebook image</dt><dd><code class="image">{{image}}</code> — listed in JupyterHub's spawner</dd>{{/image}}
        </dl>
        </div>
        """

    static let detail = """
        <p><a href="/">← All Meteors</a></p>
        {{> detailBody}}
        {{#canDelete}}
        <form method="post" action="/meteors/{{name}}/delete" class="danger">
        <input type="hidden" name="csrf" value="{{csrf}}">
        <button type="submit" id="delete">Delete {{name}}</button>
        </form>
        {{/canDelete}}
        """

    static let detailBody = """
        <div id="detail" data-name="{{name}}" data-phase="{{phase}}">
        <h1>{{name}} <span class="badge {{phaseClass}}" data-role="phase">{{phase}}</span></h1>
        <dl class="facts">
        <dt>Repository</dt><dd><span class="repo">{{url}}</span> @ <span class="ref">{{ref}}</span></dd>
        {{#submitter}}<dt>Submitted by</dt><dd>{{submitter}}</dd>{{/submitter}}
        <dt>Created</dt><dd><time datetime="{{created}}">{{created}}</time></dd>
        <dt>Expires</dt><dd>{{#expires}}<time datetime="{{expires}}" data-expires="{{expires}}">{{expires}}</time>{{/expires}}{{^expires}}never{{/expires}}</dd>
        {{#book}}<dt>JupyterBook</dt><dd><a class="book" href="{{book}}" rel="noopener noreferrer">{{book}}</a></dd>{{/book}}
        {{#image}}<dt>Notebook image</dt><dd><code class="image">{{image}}</code></dd>{{/image}}
        </dl>
        <h2>Pipeline runs</h2>
        <table><thead><tr><th scope="col">Pipeline</th><th scope="col">PipelineRun</th><th scope="col">State</th><th scope="col">Digest</th></tr></thead><tbody>
        {{#runs}}<tr><td>{{pipeline}}</td><td><code>{{run}}</code></td><td><span class="badge {{stateClass}}">{{state}}</span>{{#message}}<span class="problem">{{message}}</span>{{/message}}</td><td>{{#digest}}<code>{{digest}}</code>{{/digest}}</td></tr>{{/runs}}
        </tbody></table>
        <h2>Conditions</h2>
        <table><thead><tr><th scope="col">Type</th><th scope="col">Status</th><th scope="col">Reason</th><th scope="col">Message</th><th scope="col">Since</th></tr></thead><tbody>
        {{#conditions}}<tr data-condition="{{type}}"><td>{{type}}</td><td><span class="badge {{statusClass}}">{{status}}</span></td><td>{{reason}}</td><td>{{message}}</td><td><time datetime="{{since}}">{{since}}</time></td></tr>{{/conditions}}
        </tbody></table>
        {{^empty(images)}}<h2>Edge images</h2>{{/empty(images)}}
        {{#images}}<p><strong>{{name}}</strong> ({{platform}}) {{repository}}{{#digest}}@<code>{{digest}}</code>{{/digest}} {{#verified}}<span class="badge state-ready">signature verified</span>{{#key}} key <code>{{key}}</code>{{/key}}{{/verified}}{{^verified}}<span class="badge state-failed">not verified{{#reason}}: {{reason}}{{/reason}}</span>{{/verified}}</p>{{/images}}
        {{^empty(deployments)}}<h2>Deployments</h2>{{/empty(deployments)}}
        {{#deployments}}<p><span class="badge {{healthClass}}">{{target}} on {{cluster}}: {{sync}}/{{health}}</span></p>{{/deployments}}
        {{#fleets}}<p><span class="badge {{healthClass}}">{{summary}}</span></p>{{/fleets}}
        {{#rollout}}<h2>Rollout</h2><p><span class="badge {{stateClass}}" data-role="rollout">{{summary}}</span> {{waiting}}</p>{{/rollout}}
        <h2>Recent events</h2>
        <ul class="events">{{#events}}<li><span class="badge {{typeClass}}">{{type}}</span> <strong>{{reason}}</strong> {{message}}{{#count}} (×{{count}}){{/count}} <time datetime="{{when}}">{{when}}</time></li>{{/events}}</ul>
        </div>
        """

    static let message = """
        <section class="card"><h1>{{heading}}</h1><p{{#alert}} role="alert"{{/alert}}>{{text}}</p><p><a href="/">Back to all Meteors</a></p></section>
        """

    static let stylesheet = """
        :root { --fg: #1b1f24; --bg: #ffffff; --muted: #4a5360; --line: #c9d1d9; --accent: #0b57d0;
          --ready: #0a6b2d; --ready-bg: #dcf5e3; --failed: #a1121a; --failed-bg: #fde2e1; --building: #7a4a00; --building-bg: #fff1cc; --waiting: #3b4350; --waiting-bg: #e8ebef; }
        * { box-sizing: border-box; }
        body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
        a { color: var(--accent); }
        a:focus, button:focus, input:focus, select:focus { outline: 3px solid #f2a900; outline-offset: 2px; }
        .skip { position: absolute; left: -999px; } .skip:focus { left: 8px; top: 8px; background: #fff; padding: 4px 8px; }
        .sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
        .top { display: flex; justify-content: space-between; align-items: center; gap: 1rem; padding: .75rem 1.25rem; background: #0d1b2a; color: #fff; }
        .top a.brand { color: #fff; font-weight: 700; text-decoration: none; font-size: 1.2rem; }
        main { max-width: 1200px; margin: 0 auto; padding: 1rem 1.25rem; }
        footer { color: var(--muted); font-size: .85rem; text-align: center; padding: 1rem; }
        .card { border: 1px solid var(--line); border-radius: 8px; padding: 1rem 1.25rem; margin-bottom: 1.5rem; }
        h1 { font-size: 1.5rem; margin: .25rem 0 .5rem; } h2 { font-size: 1.2rem; margin-top: 1.5rem; }
        .field { margin: .75rem 0; border: 0; padding: 0; }
        label, legend { display: block; font-weight: 600; margin-bottom: .25rem; }
        label.check { display: inline-flex; gap: .4rem; font-weight: 400; margin-right: 1.25rem; align-items: center; }
        input[type=url], input[type=text], select { width: 100%; max-width: 40rem; padding: .5rem; font: inherit; border: 1px solid #6e7781; border-radius: 4px; }
        input[aria-invalid=true], select[aria-invalid=true] { border: 2px solid var(--failed); }
        button { font: inherit; font-weight: 600; padding: .55rem 1.2rem; border-radius: 4px; border: 0; background: var(--accent); color: #fff; cursor: pointer; }
        .danger button { background: var(--failed); margin-top: 1.5rem; }
        .error { color: var(--failed); font-weight: 600; margin: .25rem 0; }
        .notice { background: var(--building-bg); color: var(--building); padding: .5rem .75rem; border-radius: 4px; }
        table { width: 100%; border-collapse: collapse; }
        th, td { text-align: left; padding: .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
        .badge { display: inline-block; padding: .1rem .5rem; border-radius: 999px; font-size: .85rem; font-weight: 600; white-space: nowrap; }
        .state-ready { color: var(--ready); background: var(--ready-bg); }
        .state-failed { color: var(--failed); background: var(--failed-bg); }
        .state-building { color: var(--building); background: var(--building-bg); }
        .state-waiting { color: var(--waiting); background: var(--waiting-bg); }
        .pipelines { list-style: none; margin: 0; padding: 0; display: flex; flex-wrap: wrap; gap: .25rem; }
        .problem { display: block; color: var(--failed); font-size: .85rem; }
        .repo { word-break: break-all; } .ref, .image { color: var(--muted); word-break: break-all; }
        .facts { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; } .facts dt { font-weight: 600; } .facts dd { margin: 0; }
        .events { padding-left: 1rem; }
        @media (max-width: 760px) {
          #meteors thead { position: absolute; left: -9999px; }
          #meteors tr { display: block; border: 1px solid var(--line); border-radius: 8px; margin-bottom: .75rem; padding: .25rem .5rem; }
          #meteors td { display: flex; gap: .5rem; border: 0; padding: .25rem 0; }
          #meteors td::before { content: attr(data-label); font-weight: 600; min-width: 7rem; }
          .facts { grid-template-columns: 1fr; }
        }
        """

    /// Progressive enhancement: without it the pages work (forms post, links navigate); with it rows and the
    /// detail view follow the operator's cache over server-sent events, and expiry counts down.
    static let script = """
        (function () {
          'use strict';
          var live = document.getElementById('live');
          function fragment(html) { var t = document.createElement('template'); t.innerHTML = html.trim(); return t.content.firstElementChild; }
          function announce(text) { if (live) { live.textContent = text; } }
          function updateEmpty() {
            var body = document.querySelector('#meteors tbody'); var empty = document.getElementById('empty');
            if (body && empty) { empty.hidden = body.children.length > 0; }
          }
          function countdown() {
            var now = Date.now();
            document.querySelectorAll('time[data-expires]').forEach(function (t) {
              var left = Math.round((Date.parse(t.dataset.expires) - now) / 1000);
              if (isNaN(left)) { return; }
              if (left <= 0) { t.textContent = 'expiring'; return; }
              var d = Math.floor(left / 86400), h = Math.floor(left % 86400 / 3600), m = Math.floor(left % 3600 / 60), s = left % 60;
              t.textContent = 'in ' + (d ? d + 'd ' + h + 'h' : h ? h + 'h ' + m + 'm' : m ? m + 'm ' + s + 's' : s + 's');
            });
          }
          var url = document.body.dataset.events;
          if (url && window.EventSource) {
            var source = new EventSource(url);
            var connection = document.getElementById('connection');
            source.addEventListener('open', function () { if (connection) { connection.hidden = true; } });
            source.addEventListener('error', function () { if (connection) { connection.hidden = false; } });
            source.addEventListener('reset', function (e) {
              var names = JSON.parse(e.data);
              document.querySelectorAll('#meteors tbody tr').forEach(function (tr) { if (names.indexOf(tr.dataset.name) < 0) { tr.remove(); } });
              updateEmpty();
            });
            source.addEventListener('row', function (e) {
              var d = JSON.parse(e.data); var body = document.querySelector('#meteors tbody'); if (!body) { return; }
              var old = document.getElementById('meteor-' + d.name); var row = fragment(d.html);
              if (old) { if (old.dataset.phase !== row.dataset.phase) { announce(d.name + ' is ' + row.dataset.phase); } old.replaceWith(row); }
              else { body.prepend(row); }
              updateEmpty(); countdown();
            });
            source.addEventListener('gone', function (e) {
              var d = JSON.parse(e.data); var old = document.getElementById('meteor-' + d.name);
              if (old) { old.remove(); announce(d.name + ' was deleted'); }
              var detail = document.getElementById('detail');
              if (detail && detail.dataset.name === d.name) { detail.dataset.phase = 'Deleted'; announce(d.name + ' was deleted'); }
              updateEmpty();
            });
            source.addEventListener('detail', function (e) {
              var d = JSON.parse(e.data); var old = document.getElementById('detail');
              if (old && old.dataset.name === d.name) { var next = fragment(d.html); if (old.dataset.phase !== next.dataset.phase) { announce(d.name + ' is ' + next.dataset.phase); } old.replaceWith(next); countdown(); }
            });
          }
          countdown();
          setInterval(countdown, 1000);
        })();
        """
}
