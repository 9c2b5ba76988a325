// Share: uses the Web Share API where there is one, else copies the link.
export default function share(element, props) {
  const link = element.querySelector("a");
  element.dataset.hydrated = "true";
  link.addEventListener("click", async (event) => {
    const url = new URL(props.path, location.href).href;
    if (navigator.share) {
      event.preventDefault();
      await navigator.share({ title: props.title, url });
    } else if (navigator.clipboard) {
      event.preventDefault();
      await navigator.clipboard.writeText(url);
      link.textContent = "Link copied";
    }
  });
}
