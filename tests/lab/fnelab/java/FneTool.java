// Stand-ins for the vendor's command-line tools, as real Java programs (the vendor's are Java): a JVM start per call,
// HTTPS trust from the JRE truststore (javax.net.ssl.trustStore, never SSL_CERT_FILE), the documented console lines.
//
//   serverofflinesynctool [-authorize NAME PASSWORD] -url URL -generate PATH [-force]
//   serverofflinesynctool [-authorize NAME PASSWORD] -url URL -process FILE PATH
//   backofficeofflinesynctool -url URL [-out FILE] PATH
//
// The lab compiles this file (fnelab/javatools.py); the wrappers in fnelab/tools run `java FneTool server|backoffice`.
// -Dfnelab.exitZero=true (lab variant exit-zero-tools): exit 0 even after an error, as some Java tools do.
// -Dfnelab.forceQuery=NAME=VALUE (lab variant other-force-query): how -force is asked of the license server.
// -Dfnelab.backofficeZone=+05:30 (lab variant backoffice-local-times): the zone of the acknowledgment times it prints.

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.HttpURLConnection;
import java.net.URI;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.LocalDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public final class FneTool {
    static final String STARTED = "OfflineSync utility started.";
    static final String GENERATE_PATH = "/api/1.0/sync_message/offline";
    static final String FORCE_QUERY = System.getProperty("fnelab.forceQuery", "force=true");
    static final String ACK_PATH = "/api/1.0/sync_ack/offline";
    static final Pattern FILENAME = Pattern.compile("filename=\"?([^\";]+)\"?");
    static final Pattern SYNC_NAME = Pattern.compile("\\d{8}T\\d{6}\\.fnesync");
    static final DateTimeFormatter NAME_TIME = DateTimeFormatter.ofPattern("yyyyMMdd'T'HHmmss");
    static final DateTimeFormatter ISO = DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ss'Z'");
    // The back office's display format, as in the documented texts: Jan 13, 2019 10:52:45 AM
    static final DateTimeFormatter VENDOR = DateTimeFormatter.ofPattern("MMM d, yyyy h:mm:ss a", Locale.US);
    static final ZoneOffset BACKOFFICE_ZONE = ZoneOffset.of(System.getProperty("fnelab.backofficeZone", "Z"));

    static final class ToolError extends Exception {
        ToolError(String message) { super(message); }
    }

    public static void main(String[] args) {
        // HttpURLConnection silently sends a POST again when a kept-alive connection drops: a download would skip
        // the page the server handed out, unseen. Fail instead, as the lab's lost-response cases expect.
        System.setProperty("sun.net.http.retryPost", "false");
        int rc;
        try {
            if (args.length == 0 || !(args[0].equals("server") || args[0].equals("backoffice"))) {
                throw new ToolError("usage: FneTool server|backoffice ARGS...");
            }
            String[] rest = Arrays.copyOfRange(args, 1, args.length);
            rc = args[0].equals("server") ? server(rest) : backoffice(rest);
        } catch (ToolError e) {
            System.out.flush();
            System.err.println(e.getMessage().startsWith("\"") ? e.getMessage() : "ERROR: " + e.getMessage());
            rc = 1;
        } catch (IOException e) {
            System.out.flush();
            System.err.println("ERROR: " + e);
            rc = 1;
        }
        System.out.flush();
        System.exit(Boolean.getBoolean("fnelab.exitZero") ? 0 : rc);
    }

    // --- command lines ------------------------------------------------------------------------------------------

    /** Java-style single-dash options: spec maps an option to how many values it takes; the rest is positional. */
    static Map<String, List<String>> parse(String[] argv, Map<String, Integer> spec, List<String> rest)
            throws ToolError {
        Map<String, List<String>> opts = new HashMap<>();
        for (int i = 0; i < argv.length; i++) {
            String arg = argv[i];
            Integer n = spec.get(arg);
            if (n != null) {
                if (i + n >= argv.length) throw new ToolError("option " + arg + " needs " + n + " value(s)");
                opts.put(arg, Arrays.asList(Arrays.copyOfRange(argv, i + 1, i + 1 + n)));
                i += n;
            } else if (arg.startsWith("-") && arg.length() > 1) {
                throw new ToolError("unknown option " + arg);
            } else {
                rest.add(arg);
            }
        }
        return opts;
    }

    static int server(String[] argv) throws ToolError, IOException {
        List<String> rest = new ArrayList<>();
        Map<String, List<String>> o = parse(argv, Map.of("-url", 1, "-generate", 1, "-process", 2, "-force", 0,
                "-authorize", 2), rest);
        if (!o.containsKey("-url") || o.containsKey("-generate") == o.containsKey("-process") || !rest.isEmpty()) {
            throw new ToolError("usage: serverofflinesynctool [-authorize NAME PASSWORD] -url URL "
                    + "(-generate PATH [-force] | -process FILE PATH)");
        }
        System.out.println(STARTED);
        String url = o.get("-url").get(0);
        List<String> auth = o.get("-authorize");
        if (o.containsKey("-generate")) {
            Http http = new Http(base(url, GENERATE_PATH), auth);
            return generate(http, Path.of(o.get("-generate").get(0)), o.containsKey("-force"));
        }
        Http http = new Http(base(url, ACK_PATH), auth);
        return process(http, Path.of(o.get("-process").get(0)), Path.of(o.get("-process").get(1)));
    }

    static int backoffice(String[] argv) throws ToolError, IOException {
        List<String> rest = new ArrayList<>();
        Map<String, List<String>> o = parse(argv, Map.of("-url", 1, "-out", 1), rest);
        if (!o.containsKey("-url") || rest.size() != 1) {
            throw new ToolError("usage: backofficeofflinesynctool -url URL [-out FILE] PATH");
        }
        System.out.println(STARTED);
        String out = o.containsKey("-out") ? o.get("-out").get(0) : "syncack.bin";
        return upload(o.get("-url").get(0), Path.of(rest.get(0)), Path.of(out));
    }

    /** The documented endpoint URL (or a bare base URL) to the base URL; another path is an error. */
    static String base(String url, String endpoint) throws ToolError {
        URI uri;
        try {
            uri = new URI(url);
        } catch (Exception e) {
            throw new ToolError("invalid -url " + url);
        }
        String path = uri.getPath() == null ? "" : uri.getPath().replaceAll("/+$", "");
        if (uri.getScheme() == null || uri.getHost() == null || !(path.isEmpty() || path.equals(endpoint))) {
            throw new ToolError("-url " + url + " is not the " + endpoint + " endpoint");
        }
        return uri.getScheme() + "://" + uri.getRawAuthority();
    }

    // --- HTTP ---------------------------------------------------------------------------------------------------

    static final class Response {
        int status;
        String contentType = "";
        String disposition = "";
        int records;
        byte[] body = new byte[0];
    }

    static final class Http {
        final String base;
        final List<String> auth;
        String token;

        Http(String base, List<String> auth) {
            this.base = base;
            this.auth = auth;
        }

        Response post(String path, byte[] body, String contentType) throws ToolError {
            if (auth != null && token == null && !path.endsWith("/authorize")) authorize();
            Response r = new Response();
            try {
                HttpURLConnection c = (HttpURLConnection) new URL(base + path).openConnection();
                c.setRequestMethod("POST");
                c.setConnectTimeout(60000);
                c.setReadTimeout(120000);
                c.setDoOutput(true);
                c.setRequestProperty("Content-Type", contentType);
                if (token != null) c.setRequestProperty("Authorization", "Bearer " + token);
                try (OutputStream os = c.getOutputStream()) {
                    os.write(body);
                }
                r.status = c.getResponseCode();
                r.contentType = String.valueOf(c.getContentType());
                r.disposition = String.valueOf(c.getHeaderField("Content-Disposition"));
                String count = c.getHeaderField("X-FNE-Record-Count");
                r.records = count == null ? -1 : Integer.parseInt(count.trim());
                InputStream in = r.status >= 400 ? c.getErrorStream() : c.getInputStream();
                r.body = in == null ? new byte[0] : readAll(in);
            } catch (javax.net.ssl.SSLException e) {
                throw new ToolError("TLS error talking to " + base + ": " + e.getMessage());
            } catch (IOException | NumberFormatException e) {
                throw new ToolError("connection to " + base + " failed: " + e);
            }
            return r;
        }

        void authorize() throws ToolError {
            String json = "{\"user\": " + quote(auth.get(0)) + ", \"password\": " + quote(auth.get(1)) + "}";
            Response r = post("/api/1.0/instances/~/authorize", json.getBytes(StandardCharsets.UTF_8),
                    "application/json");
            String found = r.status == 200 ? jsonString(text(r.body), "token") : null;
            if (found == null) throw new ToolError(errorText(r));
            token = found;
        }
    }

    static byte[] readAll(InputStream in) throws IOException {
        try (in) {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            in.transferTo(out);
            return out.toByteArray();
        }
    }

    static String text(byte[] data) {
        return new String(data, StandardCharsets.UTF_8);
    }

    static String quote(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }

    /** A top-level string value of a JSON object (enough for the answers these tools read). */
    static String jsonString(String json, String key) {
        Matcher m = Pattern.compile("\"" + Pattern.quote(key) + "\"\\s*:\\s*\"((?:[^\"\\\\]|\\\\.)*)\"").matcher(json);
        return m.find() ? m.group(1).replace("\\\"", "\"").replace("\\\\", "\\") : null;
    }

    /** The server's error as the vendor's tools print it. */
    static String errorText(Response r) {
        String body = text(r.body).trim();
        Matcher one = Pattern.compile("^\\{\\s*\"((?:[^\"\\\\]|\\\\.)*)\"\\s*:\\s*\"((?:[^\"\\\\]|\\\\.)*)\"\\s*\\}$")
                .matcher(body);
        if (one.matches() && one.group(1).startsWith("Mismatched")) {
            return "\"" + one.group(1) + "\": \"" + one.group(2) + "\"";  // the back office's words, as documented
        }
        String key = jsonString(body, "key");
        if (key != null) {
            String message = jsonString(body, "message");
            Matcher args = Pattern.compile("\"arguments\"\\s*:\\s*\\[([^\\]]*)\\]").matcher(body);
            return "Server responded with a " + r.status + " and an error message of: key='" + key + "' message='"
                    + (message == null ? "" : message) + "' arguments=[" + (args.find() ? args.group(1) : "") + "]";
        }
        if (one.matches()) return "\"" + one.group(1) + "\": \"" + one.group(2) + "\"";
        return "Server responded with a " + r.status + ": " + (body.length() > 300 ? body.substring(0, 300) : body);
    }

    // --- lab files ----------------------------------------------------------------------------------------------

    /** The JSON or Key=Value text inside a lab message or acknowledgment (MAGIC, 4-byte length, body, HMAC). */
    static String labBody(byte[] data) {
        if (data.length < 12 + 32) return "";
        int size = ((data[8] & 0xff) << 24) | ((data[9] & 0xff) << 16) | ((data[10] & 0xff) << 8) | (data[11] & 0xff);
        if (size < 0 || 12 + size > data.length) return "";
        return new String(data, 12, size, StandardCharsets.UTF_8);
    }

    static LocalDateTime iso(String text) {
        return text == null ? null : LocalDateTime.parse(text, ISO);
    }

    static LocalDateTime nameTime(String name) {
        if (!SYNC_NAME.matcher(name).matches()) return null;
        return LocalDateTime.parse(name.substring(0, 15), NAME_TIME);
    }

    static List<Path> syncFiles(Path path) throws ToolError, IOException {
        if (Files.isRegularFile(path)) return List.of(path);
        if (!Files.isDirectory(path)) throw new ToolError(path + ": no such file or folder");
        List<Path> files = new ArrayList<>();
        try (var stream = Files.list(path)) {
            stream.filter(p -> Files.isRegularFile(p) && nameTime(p.getFileName().toString()) != null)
                    .sorted().forEach(files::add);
        }
        return files;
    }

    static void writeAtomic(Path target, byte[] data) throws IOException {
        Path dir = target.toAbsolutePath().getParent();
        Path tmp = Files.createTempFile(dir, ".", ".part");
        Files.write(tmp, data);
        Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }

    // --- serverofflinesynctool ----------------------------------------------------------------------------------

    static int generate(Http http, Path path, boolean force) throws ToolError, IOException {
        Files.createDirectories(path);
        int total = 0;
        boolean first = true;
        while (true) {
            // force only on the first call: it resets the server's cursor; the rest page on from there
            Response r = http.post(GENERATE_PATH + (force && first ? "?" + FORCE_QUERY : ""), new byte[0],
                    "application/octet-stream");
            first = false;
            if (r.status == 204 || (r.status == 200 && (r.body.length == 0 || r.contentType.contains("json")))) break;
            if (r.status != 200) throw new ToolError(errorText(r));
            // the file name from Content-Disposition, else from the message's own sync time
            Matcher m = FILENAME.matcher(r.disposition);
            String name = m.find() ? m.group(1) : null;
            if (name == null) {
                String sync = jsonString(labBody(r.body), "SyncTime");
                name = sync == null ? null : iso(sync).format(NAME_TIME) + ".fnesync";
            }
            if (name == null || nameTime(name) == null) throw new ToolError("server sent no valid file name");
            writeAtomic(path.resolve(name), r.body);
            Matcher count = Pattern.compile("\"RecordCount\"\\s*:\\s*(\\d+)").matcher(labBody(r.body));
            total += r.records >= 0 ? r.records : count.find() ? Integer.parseInt(count.group(1)) : 0;
        }
        // every message carries at least one record, so zero records means no file was written
        System.out.println(total == 0 ? "No new data is available." : "Sync completed for " + total
                + " device records.");
        return 0;
    }

    static int process(Http http, Path ack, Path path) throws ToolError, IOException {
        byte[] data;
        try {
            data = Files.readAllBytes(ack);
        } catch (IOException e) {
            throw new ToolError("cannot read acknowledgment " + ack + ": " + e);
        }
        Response r = http.post(ACK_PATH, data, "application/octet-stream");
        if (r.status != 200) throw new ToolError(errorText(r));
        // what the acknowledgment covers: its own LastSyncTime, or the server's newer one
        Matcher own = Pattern.compile("(?m)^LastSyncTime=(\\S+)$").matcher(labBody(data));
        LocalDateTime last = own.find() ? iso(own.group(1)) : null;
        LocalDateTime server = iso(jsonString(text(r.body), "lastSyncTime"));
        if (last == null || server != null && server.isAfter(last)) last = server;
        if (last != null && Files.isDirectory(path)) {
            for (Path f : syncFiles(path)) {
                if (!nameTime(f.getFileName().toString()).isAfter(last)) {
                    System.out.println("Purging file " + f.getFileName());
                    Files.deleteIfExists(f);
                }
            }
        }
        return 0;
    }

    // --- backofficeofflinesynctool ------------------------------------------------------------------------------

    static int upload(String url, Path path, Path out) throws ToolError, IOException {
        List<Path> files = syncFiles(path);
        if (files.isEmpty()) throw new ToolError(path + ": no sync files to upload");
        URI uri = URI.create(url);
        Http http = new Http(uri.getScheme() + "://" + uri.getRawAuthority(), null);
        String endpoint = uri.getRawPath() == null || uri.getRawPath().isEmpty() ? "/deviceservices" : uri.getRawPath();
        byte[] ack = null;
        try {
            for (Path f : files) {
                Response r = http.post(endpoint, Files.readAllBytes(f), "application/octet-stream");
                if (r.status != 200) throw new ToolError(errorText(r));
                ack = r.body;
            }
        } finally {
            if (ack != null) writeAtomic(out.toAbsolutePath(), ack);  // what was accepted so far: keep for -process
        }
        System.out.println("Successfully sent sync data and received a sync acknowledgment.");
        // the acknowledgment's fields, times in the vendor's format and quoted
        for (String line : labBody(ack).split("\n")) {
            int eq = line.indexOf('=');
            if (eq < 0) continue;
            String key = line.substring(0, eq);
            String value = line.substring(eq + 1);
            if (key.endsWith("Time") || key.endsWith("TIme")) {
                value = iso(value).atOffset(ZoneOffset.UTC).withOffsetSameInstant(BACKOFFICE_ZONE).format(VENDOR);
                value = "\"" + value + "\"";
            }
            System.out.println(key + "=" + value);
        }
        return 0;
    }
}
