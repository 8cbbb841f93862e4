# Copyright: fne.offline_sync contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared option docs: the client settings of every module, and the license-server connection."""

from __future__ import annotations


class ModuleDocFragment:
    # Settings every module takes (fne.offline_sync.connection).
    DOCUMENTATION = r"""
options:
  validate_certs:
    description:
      - Verify the server's TLS certificate. Keep it on; use O(ca_path) for a private CA instead.
    type: bool
    default: true
  timeout:
    description:
      - Seconds one request may take in all, to connect, send and receive its whole answer (and that much again for
        each further MiB sent or received); a server that trickles its answer is cut off when the time is up. Above
        0 and at most 86400.
      - Answers are bounded in size too, so that an endless answer fills no disk; a sync message at most 1 GiB, an
        acknowledgment 64 MiB, any other answer 1 MiB (of an error page only the first 64 KiB are read).
    type: float
    default: 30
  retries:
    description:
      - How many times to retry a request that failed transiently; 0 disables retries, at most 100.
      - Only these are retried, each with a warning; a connection that could not be established, and the answers
        408, 429, 502, 503 and 504. A C(Retry-After) header is honoured (capped by O(max_retry_wait)); otherwise
        the wait doubles from 1 second.
      - A request whose answer was lost after it reached the server is not repeated where repeating could lose or
        duplicate data (the download of sync messages, the upload of a message), and neither is a 502 or 504 gateway
        answer to those, nor a TLS error other than a refused certificate; see the C(LostResponseError) notes of the
        module.
    type: int
    default: 3
  max_retry_wait:
    description:
      - The longest wait between two attempts, in seconds (0 to 86400), whatever C(Retry-After) asks for.
    type: float
    default: 60
  backend:
    description:
      - V(http) talks to the REST API with the Python C(requests) library (proxies come from the standard
        C(HTTPS_PROXY)/C(HTTP_PROXY)/C(NO_PROXY) environment variables).
      - V(tool) runs the vendor's command line tools (C(serverofflinesynctool), C(backofficeofflinesynctool)) and
        reads their documented console lines into the same return values. A tool succeeded only when it printed
        its documented line (C(Sync completed for N device records.), C(No new data is available.), C(Successfully
        sent sync data and received a sync acknowledgment.); for processing, nothing but C(Purging file ...) lines),
        whatever its exit code; anything else fails with the tool's own text. A download that failed counts as a
        lost answer (the server may have handed out records the tool did not save); a forced download brings them
        back. Files the tool wrote under other names than C(yyyyMMddTHHmmss.fnesync) are never deleted; they are
        kept as C(NAME.unrecognized) in the folder, and the task fails naming them.
      - With V(tool) and administrative security, the password is passed on the tool's command line
        (C(-authorize NAME PASSWORD) first, as the vendor documents); while the tool runs, other users of the host
        can see it in the process list. It is kept out of every result, log line and error message. Prefer V(http)
        where that exposure matters.
      - With V(tool), O(timeout), O(retries) and O(max_retry_wait) do not apply (the tool has its own). For an
        HTTPS URL, O(ca_path) becomes a Java truststore for that run, handed to the tool's JVM with
        C(-Djavax.net.ssl.trustStore) in C(JAVA_TOOL_OPTIONS) (a JVM ignores C(SSL_CERT_FILE)); O(validate_certs=false)
        is refused, since the vendor documents no way to turn the tool's certificate check off.
    type: str
    choices: [http, tool]
    default: http
  tool_path:
    description:
      - The folder holding the vendor tools, for O(backend=tool); each is looked for as C(NAME.sh), then C(NAME)
        (as a 2022.09 Linux install names them; C(NAME.bat), C(NAME.cmd), C(NAME) on Windows). Without it the tools
        are looked up on C(PATH). C(tool_server_command) and C(tool_backoffice_command) name a command exactly.
      - If not set, the value of the E(FNE_TOOL_PATH) environment variable is used.
    type: path
notes:
  - Redirects are never followed, since they could carry the password, a token or the sync records to another host;
    a 3xx answer fails with the C(Location) it named. Set the URL to the server's own address.
  - A URL must be C(http://) or C(https://) with a host, and may not carry credentials (C(user:password@)).
  - Every error message names the URL and the cause (unreachable, TLS failure, refused credentials, wrong URL, the
    server's own error text); none carries a password or token.
requirements:
  - requests >= 2.25 (on the host that runs the module; the controller when the task runs there)
"""

    # The license server (fne.offline_sync.connection.lls).
    LLS = r"""
options:
  url:
    description:
      - The license server's base URL, C(http://HOST:7070) (HTTPS usually C(https://HOST:1443)).
      - The full endpoint URL the vendor tool takes (C(.../api/1.0/sync_message/offline) or
        C(.../api/1.0/sync_ack/offline)) is accepted too and reduced to the base URL.
      - If not set, the value of the E(FNE_LLS_URL) environment variable is used, else V(http://localhost:7070).
    type: str
    default: http://localhost:7070
  username:
    description:
      - The administrative user, when administrative security is enabled on the license server. The module
        authorizes once per URL, user and password (C(POST /api/1.0/instances/~/authorize)) and authorizes again
        once when a token has expired.
      - If not set, the value of the E(FNE_LLS_USERNAME) environment variable is used.
    type: str
  password:
    description:
      - The administrative user's password. Never returned or logged.
      - If not set, the value of the E(FNE_LLS_PASSWORD) environment variable is used.
    type: str
  ca_path:
    description:
      - PEM file of the CA that signed the license server's HTTPS certificate, for a private CA.
      - If not set, the value of the E(FNE_LLS_CA_PATH) environment variable is used.
    type: path
  tool_server_command:
    description:
      - With O(backend=tool), the exact command that runs the vendor's license-server tool (split as a shell would,
        without a shell), for example V(/opt/flexnetls/enterprise/serverofflinesynctool) or a wrapper of the site's
        own; the module adds the documented arguments. Overrides the lookup in O(tool_path).
      - If not set, the value of the E(FNE_TOOL_SERVER_COMMAND) environment variable is used.
    type: str
  time_zone:
    description:
      - The time zone of the license server's sync file names (C(yyyyMMddTHHmmss.fnesync)) and of a
        C(lastSyncTime) it answers without a zone; V(UTC) when unset. An offset (V(+02:00), V(-05:00)) or, where
        Python has C(zoneinfo), a zone name (V(Europe/Berlin)).
      - The vendor does not say which zone the names use. Nothing can detect it, so set it for a server that names
        files in its local time. Where it is wrong, nothing is lost - O(path) is purged only when the
        acknowledgment's last sync time is exactly one of its file names. See docs/compatibility.md.
    type: str
  max_pages:
    description:
      - The most sync messages one download takes from the server. The rest of a larger backlog
        comes with the next run (the server keeps what it has not handed out).
    type: int
    default: 10000
  force_query:
    description:
      - The query string that asks the license server for a forced download (the C(force) option of generate, and
        the fleet's recovery). The vendor documents only the tool's C(-force); the C(fne.offline_sync.compat_check)
        playbook shows what the tool sends, and names this setting when a server asks it another way. See
        docs/compatibility.md.
    type: str
    default: force=true
  proxy:
    description:
      - The proxy for the license server, C(http://HOST:PORT), named in connection errors; the back office has its
        own setting.
      - Set, it wins over the E(HTTPS_PROXY), E(HTTP_PROXY) and E(NO_PROXY) environment variables for the license
        server; not set, those apply. Credentials in the URL are refused. O(backend=tool) does not use it.
      - If not set, the value of the E(FNE_LLS_PROXY) environment variable is used.
    type: str
"""
