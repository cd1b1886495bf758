"""The console in a real headless Chromium (Debian's, driven by Selenium through the
system chromedriver: nothing is downloaded): an agent signs in with the link mailed to
them, opens the queue and a ticket, answers with an attachment, and the customer's mail
with that attachment reaches the SMTP sink; a mail whose HTML carries a script and an
event handler is shown inert. Screenshots of the queue and the ticket go to
tests/screenshots/ (ignored by git)."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.fixtures.console_service import LUCIA, ConsoleService, link_in
from tests.fixtures.service import SUPPORT
from tests.helpers import body, missing_server, parsed

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).parent / "screenshots"
CUSTOMER = "paciente@clinica.example"
HOSTILE_HTML = (
    "<p>Hola, <b>no puedo</b> pagar la factura.</p>"
    "<script>document.title = 'pwned'; alert('script');</script>"
    "<img src=\"x\" onerror=\"document.title = 'pwned'; alert('onerror')\">"
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        missing_server(
            "chromium", f"{CHROMIUM} and {CHROMEDRIVER} are needed (deploy/bootstrap.sh)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=412,915",  # a phone-sized screen
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):  # fmt: skip
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    except WebDriverException as exc:
        missing_server("chromium", str(exc).splitlines()[0])
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _send_html_mail(console: ConsoleService, subject: str) -> int:
    msg = EmailMessage()
    msg["From"] = f"Paciente <{CUSTOMER}>"
    msg["To"] = SUPPORT
    msg["Subject"] = subject
    msg.set_content("Hola, no puedo pagar la factura.")
    msg.add_alternative(HOSTILE_HTML, subtype="html")
    with smtplib.SMTP("127.0.0.1", console.smtp_port, timeout=10) as client:
        client.send_message(msg)

    return console.ticket_numbered(subject)


def _no_alert(driver: WebDriver) -> bool:
    try:
        _ = driver.switch_to.alert.text  # raises when no alert is open
    except NoAlertPresentException:
        return True
    return False


def test_an_agent_signs_in_reads_a_hostile_mail_inert_and_replies_with_a_file(
    console: ConsoleService, browser: WebDriver, tmp_path: Path
) -> None:
    number = _send_html_mail(console, "No puedo pagar la factura")
    wait = WebDriverWait(browser, 30)

    # Sign in with the link that arrives by mail.
    before = len(console.sink.messages)
    browser.get(f"{console.url}/signin")
    form = browser.find_element(By.ID, "link-form")
    form.find_element(By.NAME, "address").send_keys(LUCIA)
    form.find_element(By.CSS_SELECTOR, "button").click()
    wait.until(lambda d: d.find_elements(By.ID, "message"))
    browser.get(link_in(body(parsed(console.mail_to(LUCIA, before)))))
    browser.find_element(By.CSS_SELECTOR, "#link-confirm button").click()

    # The queue, then the ticket.
    wait.until(lambda d: d.find_elements(By.ID, "queue"))
    assert "Lucía Romero" in browser.page_source
    SCREENSHOTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / "queue.png"))
    browser.find_element(By.CSS_SELECTOR, f'#queue a[href="/tickets/{number}"]').click()
    wait.until(lambda d: d.find_elements(By.ID, "thread"))
    for details in browser.find_elements(By.CSS_SELECTOR, "#thread details"):
        details.click()  # unfold the quoted text and the HTML version

    # The hostile HTML is there as sanitised markup, and nothing of it ran.
    thread = browser.find_element(By.ID, "thread")
    assert "no puedo" in thread.find_element(By.CSS_SELECTOR, ".mail-html b").text
    assert _no_alert(browser) and browser.title != "pwned"
    assert not thread.find_elements(By.CSS_SELECTOR, "script, [onerror]")
    browser.save_screenshot(str(SCREENSHOTS / "ticket.png"))

    # Answer with a file attached: the customer's mail carries it.
    attachment = tmp_path / "factura-corregida.txt"
    attachment.write_text("Importe corregido: 42 EUR\n")
    before = len(console.sink.messages)
    reply = browser.find_element(By.ID, "reply")
    reply.find_element(By.NAME, "text").send_keys("Le adjuntamos la factura corregida.")
    reply.find_element(By.NAME, "attach").send_keys(str(attachment))
    reply.find_element(By.CSS_SELECTOR, "button").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".flash.ok"))
    assert "Le adjuntamos la factura corregida." in browser.find_element(By.ID, "thread").text

    mail = parsed(console.mail_to(CUSTOMER, before))
    assert "Le adjuntamos la factura corregida." in body(mail)
    files = {p.get_filename(): p.get_content() for p in mail.iter_attachments()}
    assert files == {"factura-corregida.txt": "Importe corregido: 42 EUR\n"}
    assert _no_alert(browser)
