"""`tocsin replay --to kafka` over the real Kafka protocol: `tocsin broker` (librdkafka's
mock cluster on 127.0.0.1), the replay producing, kcat reading the topics back. Asserts
the exact events (count, keys, fields), the clear failures when no broker answers or a
delivery fails, and, with `tocsin run` consuming, the alert raised from replayed
complaints.

Fixtures (fixtures/replay/, made up for this test): six rows in the NYC 311 CSV schema
(four heating complaints, three of them from one building within an hour; one other
complaint; one without an address) and two heating faults as JSONL; plus the shipped
example mapping file examples/replay/tickets.mapping.yaml.
"""
import json
import os
import socket
import subprocess
import time
import unittest

from harness import SOURCE_DIR, TOCSIN, PipelineTestCase, kcat_consume, wait_for

FIXTURES = os.path.join(SOURCE_DIR, "tests", "integration", "fixtures", "replay")
NYC311 = os.path.join(FIXTURES, "nyc311_heat.csv")
FAULTS = os.path.join(FIXTURES, "faults.jsonl")
TICKETS = os.path.join(SOURCE_DIR, "examples", "replay", "tickets.csv")
TICKETS_MAPPING = os.path.join(SOURCE_DIR, "examples", "replay", "tickets.mapping.yaml")
HEATING_RULES = os.path.join(SOURCE_DIR, "examples", "packs", "heating", "rules.yaml")


def replay(*args, timeout=60):
    return subprocess.run([TOCSIN, "replay", *args], capture_output=True, text=True, timeout=timeout)


def fnv1a(data):
    h = 1469598103934665603
    for b in data:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def nyc311_expected():
    """The complaints the nyc311 mapping makes of the fixture (docs/packs/heating.md), by ticket."""
    with open(NYC311, "rb") as f:
        raw = {line.split(b",", 1)[0].decode(): line.rstrip(b"\n") for line in f}

    def complaint(key, time_, building, street, community, district, text):
        return {"ticket_id": key, "time": time_, "status": "received", "category": "heating.no_heat",
                "urgency": "utility", "complainant": "99%010d" % (fnv1a(raw[key]) % 10_000_000_000),
                "district": district, "street": street, "community": community, "building": building, "text": text}

    b840 = "840 GRAND CONCOURSE, BRONX [BBL 2024430001]"
    return {  # January: EST, UTC-5
        "59001": complaint("59001", "2024-01-15T11:10:00.000Z", b840, "GRAND CONCOURSE", "04 BRONX", "BRONX",
                           "HEAT/HOT WATER: ENTIRE BUILDING"),
        "59002": complaint("59002", "2024-01-15T11:25:30.000Z", b840, "GRAND CONCOURSE", "04 BRONX", "BRONX",
                           "HEAT/HOT WATER: APARTMENT ONLY"),
        "59004": complaint("59004", "2024-01-15T12:02:10.000Z", b840, "GRAND CONCOURSE", "04 BRONX", "BRONX",
                           "HEAT/HOT WATER: ENTIRE BUILDING"),
        "59006": complaint("59006", "2024-01-15T14:15:00.000Z", "1155 EAST 35 STREET, BROOKLYN [BBL 3076170017]",
                           "EAST 35 STREET", "18 BROOKLYN", "BROOKLYN", 'HEAT/HOT WATER: ENTIRE BUILDING, "NO HEAT"'),
    }


def closed_port():
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ReplayToKafkaTest(PipelineTestCase):
    TOPICS = ["calls:2", "faults:2", "complaints:3", "alerts:2", "tocsin.dlq:2", "tocsin.late:2",
              "replay.complaints:2"]

    def test_nyc311_and_jsonl_events_arrive_keyed_by_partition_key(self):
        r = replay("--to", "kafka", "--brokers", self.broker.bootstrap, "--mapping", "nyc311", NYC311)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("rows read            6 (4 mapped, 1 not taken by the mapping, 1 unreadable)", r.stdout)
        self.assertIn("events sent          4 of 4: 4 acknowledged by the broker, 0 not", r.stdout)
        self.assertRegex(r.stdout, r"complaints +4  -> topic complaints")
        self.assertRegex(r.stdout, r"calls +0  -> topic calls")
        self.assertIn("4/4 events sent", r.stderr)

        got = kcat_consume(self.broker.bootstrap, "complaints")
        self.assertEqual(len(got), 4)
        expected = nyc311_expected()
        by_key = {}
        for key, _, value in got:
            by_key[key] = json.loads(value)
            self.assertEqual(key, by_key[key]["ticket_id"], "complaints are keyed by ticket_id")
        self.assertEqual(by_key, expected)

        r = replay("--to", "kafka", "--brokers", self.broker.bootstrap, "--mapping", "jsonl", FAULTS)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"faults +2  -> topic faults")
        faults = kcat_consume(self.broker.bootstrap, "faults")
        self.assertEqual([k for k, _, _ in faults], ["BX-NORTH", "BX-NORTH"], "faults are keyed by network_id")
        with open(FAULTS, "rb") as f:
            self.assertEqual([v for _, _, v in faults], [line.rstrip(b"\n") for line in f],
                             "JSONL lines go out unchanged, in event-time order (one key: one partition)")
        self.assertEqual(kcat_consume(self.broker.bootstrap, "calls"), [])

    def test_mapping_file_topic_prefix_and_pacing(self):
        # 85 minutes of event time at 100000x: paced, well under a second.
        r = replay("--to", "kafka", "--brokers", self.broker.bootstrap, "--topic-prefix", "replay.",
                   "--speed", "100000", "--mapping-file", TICKETS_MAPPING, TICKETS)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("100000x real time", r.stdout)
        self.assertRegex(r.stdout, r"complaints +4  -> topic replay.complaints")
        self.assertIn("tickets.csv:7: row not mapped: time: '2024/12/02 25:10'", r.stderr)
        got = kcat_consume(self.broker.bootstrap, "replay.complaints")
        keys = sorted(k for k, _, _ in got)
        self.assertEqual(keys, ["T-24-000101", "T-24-000102", "T-24-000103", "T-24-000105"])
        first = next(json.loads(v) for k, _, v in got if k == "T-24-000101")
        self.assertEqual(first, {"ticket_id": "T-24-000101", "time": "2024-12-01T23:05:00.000Z", "status": "received",
                                 "category": "heating.no_heat", "urgency": "utility", "complainant": "13800001111",
                                 "district": "Chaoyang", "street": "Jinsong", "community": "Jinsong 3rd",
                                 "building": "Building 12", "text": "No heat since last night, radiators cold"})
        self.assertEqual(kcat_consume(self.broker.bootstrap, "complaints"), [], "the prefix is honoured")
        for phone in ("13800001111", "13800002222", "13800003333"):
            self.assertNotIn(phone, r.stdout + r.stderr, "phone numbers never reach the logs")

    def test_no_broker_is_a_clear_error(self):
        port = closed_port()
        r = replay("--to", "kafka", "--brokers", f"127.0.0.1:{port}", "--connect-timeout", "1",
                   "--mapping", "nyc311", NYC311)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(f"cannot reach Kafka at 127.0.0.1:{port} within 1 s", r.stderr)
        self.assertIn("check --brokers HOST:PORT", r.stderr)
        self.assertIn("tocsin replay: nothing was replayed", r.stderr)
        self.assertEqual(r.stdout, "")

    def test_failed_delivery_is_a_clear_error(self):
        # Every produce request is refused, not retriably.
        self.assertEqual(self.broker.command("errors 0 100 TOPIC_AUTHORIZATION_FAILED"), "ok")
        r = replay("--to", "kafka", "--brokers", self.broker.bootstrap, "-X", "message.timeout.ms=5000",
                   "--mapping", "nyc311", NYC311)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, r"tocsin replay: \d of \d events sent were not acknowledged by Kafka at ")
        self.assertIn("check that the topics exist and take writes", r.stderr)
        self.assertRegex(r.stdout, r"acknowledged by the broker, [1-9]\d* not")

    def test_bad_options_are_refused_before_anything_is_sent(self):
        r = replay("--to", "kafka", "--mapping", "nyc311", NYC311)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--to kafka needs --brokers HOST:PORT", r.stderr)
        r = replay("--to", "kafka", "--brokers", self.broker.bootstrap, "--rules", HEATING_RULES,
                   "--mapping", "nyc311", NYC311)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--rules is for in-process replays", r.stderr)
        r = replay("--to", "kafka", "--brokers", self.broker.bootstrap, "-X", "no.such.property=1",
                   "--mapping", "nyc311", NYC311)
        self.assertEqual(r.returncode, 2)
        self.assertIn("no.such.property", r.stderr)
        self.assertEqual(kcat_consume(self.broker.bootstrap, "complaints"), [])



class ReplayToDaemonTest(PipelineTestCase):
    # One partition for complaints: the daemon reads several partitions batch by batch, and
    # the building window (keyed by building, not by the ticket the topic is keyed by)
    # must see the replayed complaints in event-time order (docs/replay.md, "Speed").
    TOPICS = ["calls:2", "faults:2", "complaints:1", "alerts:2", "tocsin.dlq:2", "tocsin.late:2"]

    def test_daemon_raises_the_building_alert_from_replayed_complaints(self):
        # One worker: the building rule groups complaints keyed by ticket (docs/rules.md).
        d = self.start(workers=1, rules_dir=HEATING_RULES)
        r = replay("--to", "kafka", "--brokers", self.broker.bootstrap, "--mapping", "nyc311", NYC311)
        self.assertEqual(r.returncode, 0, r.stderr)
        wait_for("the replayed complaints consumed", lambda: d.total("tocsin_events_consumed_total") == 4, timeout=60)
        alerts = wait_for("the building alert", lambda: [json.loads(v) for _, _, v in kcat_consume(self.broker.bootstrap, "alerts")
                                                         if json.loads(v)["rule"] == "heating.complaints.building_2h"])
        self.assertEqual(len(alerts), 1)
        a = alerts[0]
        self.assertEqual(a["key"], {"building": "840 GRAND CONCOURSE, BRONX [BBL 2024430001]"})
        self.assertEqual(a["source"]["topic"], "complaints")
        self.assertEqual(d.total("tocsin_events_processed_total"), 4)
        self.assertEqual(d.total("tocsin_events_failed_total"), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
