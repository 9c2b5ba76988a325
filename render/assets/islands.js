/* render islands loader: hydrates each <render-island> when its condition is met */
const r=e=>import("/islands/"+e.getAttribute("component")+".js").then(m=>m.default(e,JSON.parse(e.getAttribute("props")||"{}"))),
w={load:(e,h)=>h(),only:(e,h)=>h(),
idle:(e,h)=>(window.requestIdleCallback||setTimeout)(h),
visible:(e,h)=>{const o=new IntersectionObserver(s=>{s.some(x=>x.isIntersecting)&&(o.disconnect(),h())});o.observe(e)},
interaction:(e,h)=>{const t=["pointerdown","focusin","keydown"],f=()=>{t.forEach(n=>e.removeEventListener(n,f,!0));h()};t.forEach(n=>e.addEventListener(n,f,!0))},
media:(e,h)=>{const m=matchMedia(e.getAttribute("media")),c=()=>m.matches&&(m.removeEventListener("change",c),h());m.matches?h():m.addEventListener("change",c)}};
document.querySelectorAll("render-island").forEach(e=>{const f=w[e.getAttribute("hydrate")];f&&f(e,()=>r(e))});
