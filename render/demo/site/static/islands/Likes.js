// A like button: counts clicks on this page (a real app would post them to its API).
export default function likes(element, props) {
  const button = element.querySelector("button");
  let count = props.start;
  element.dataset.hydrated = "true";
  button.addEventListener("click", () => {
    count += 1;
    button.textContent = `${count} readers liked this`;
  });
}
