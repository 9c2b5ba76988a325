/* render: registers /sw.js, which keeps this visit on one version of the site */
{
  const sw = navigator.serviceWorker;
  if (sw) {
    let seen = null;
    const reload = () => new Promise(done => {
      const channel = new MessageChannel();
      channel.port1.onmessage = () => done();
      sw.controller ? sw.controller.postMessage({ type: "render:update" }, [channel.port2]) : done();
    }).then(() => location.reload());
    sw.addEventListener("message", event => {
      const m = event.data || {};
      if (m.type === "render:reload") location.reload();
      else if (m.type === "render:version") {
        window.renderVersion = { live: m.version, pinned: m.pinned };
        if (m.version && m.pinned && m.version !== m.pinned && m.version !== seen) {
          seen = m.version;
          window.dispatchEvent(new CustomEvent("render:version", { detail: { version: m.version, reload } }));
        }
      }
    });
    sw.startMessages();
    if (sw.controller) sw.controller.postMessage({ type: "render:hello" });
    sw.register("/sw.js", { scope: "/", updateViaCache: "none" }).catch(() => {});
  }
}
