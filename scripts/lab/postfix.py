"""Postfix (Debian's package) in the lab: a mailbox server's own MTA in front of its Dovecot, as
many operators run them — mailfront's inbound listener hands it mail over SMTP, and Postfix
delivers to Dovecot's LMTP (`virtual_transport = lmtp:`), with its queue in the lab.

Run by hand as its own instance (`postfix -c <dir> start-fg`, never the system's), logging to a
file (`maillog_file`). Postfix announces DSN and SMTPUTF8, which Dovecot 2.3's LMTP does not:
through it the lab has a delivery server that takes both.

    pf = Postfix(root, "mta1", smtp_port=free_port(), lmtp_port=dovecot.ports.lmtp,
                 domains=["example.com"])
    pf.start()
    pf.log_text()      # Postfix's log, for what it did with a message
    pf.stop()
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .packages import ensure_installed
from .processes import Child, wait_for_greeting

POSTFIX = "/usr/sbin/postfix"

# The services a delivering Postfix needs, none chrooted (the lab has no chroot to offer).
MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
lmtp      unix  - - n - - lmtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class Postfix(Child):
    """One Postfix instance on 127.0.0.1:`smtp_port` that delivers mail for `domains` to the
    LMTP server on 127.0.0.1:`lmtp_port`, and takes mail only from loopback."""

    def __init__(self, root: Path, name: str, smtp_port: int, lmtp_port: int, domains: list[str]):
        self.dir = root / f"postfix-{name}"
        super().__init__(f"postfix {name}", self.dir / "postfix.out")
        self.hostname = f"{name}.lab"
        self.smtp_port = smtp_port
        self.lmtp_port = lmtp_port
        self.domains = domains
        self.maillog = self.dir / "maillog"
        # Postfix announces SMTPUTF8 unless told not to (a test turns it off).
        self.smtputf8 = True

    def write_config(self) -> None:
        etc, queue, data = self.dir / "etc", self.dir / "queue", self.dir / "data"
        for d in (etc, queue, data):
            d.mkdir(parents=True, exist_ok=True)
        subprocess.run(["chown", "postfix", str(data)], check=True)
        (etc / "main.cf").write_text(f"""compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = {self.hostname}
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
virtual_mailbox_domains = {", ".join(self.domains)}
virtual_transport = lmtp:inet:127.0.0.1:{self.lmtp_port}
local_recipient_maps =
alias_maps =
alias_database =
relayhost =
smtputf8_enable = {"yes" if self.smtputf8 else "no"}
biff = no
maillog_file = {self.maillog}
maillog_file_prefixes = {self.dir}
smtpd_banner = $myhostname ESMTP
""")
        (etc / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{self.smtp_port}"))

    def start(self, timeout: float = 30.0) -> None:
        ensure_installed("postfix")
        self.write_config()
        etc = self.dir / "etc"
        # Creates the queue's folders with their owners and modes (as `postfix start` would).
        subprocess.run([POSTFIX, "-c", str(etc), "set-permissions"], check=True, capture_output=True)
        self.spawn([POSTFIX, "-c", etc, "start-fg"])
        self.wait_ready(lambda: self._greets(), timeout, interval=0.05)

    def _greets(self) -> bool | str:
        try:
            wait_for_greeting(self.smtp_port, b"220 ", timeout=0.5)
            return True
        except TimeoutError as e:
            return str(e)

    def stop(self, *args, **kwargs) -> None:
        if self.process is not None:
            subprocess.run([POSTFIX, "-c", str(self.dir / "etc"), "stop"], capture_output=True)
        super().stop(*args, **kwargs)

    def log_text(self) -> str:
        return (self.maillog.read_text(errors="replace") if self.maillog.exists() else "") + super().log_text()
