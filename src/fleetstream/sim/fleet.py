"""The fleet: N vehicles advanced together with NumPy, one array per state variable.

Per tick of ``dt`` seconds, every car: follows its lifecycle (parked, idling, driving), its driver
picks a target speed for the road segment and works the pedals toward it, the engine's torque goes
through the gearbox and final drive to the wheels against drag, rolling resistance, grade and
brakes, the automatic gearbox picks the gear of the model's shift schedule, and temperatures, fuel,
wear, odometer and position follow. Faults are injected as episodes and labelled on the values
emitted (see :mod:`fleetstream.sim.faults`).

>>> fleet = Fleet(FleetConfig(cars=4, seed=1))
>>> frame = fleet.step()
>>> sorted(frame)[:3]
['brake', 'brake_wear', 'car_index']
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fleetstream.reference.catalog import PROFILES, Car, CarModel, generate_cars, model_by_id
from fleetstream.reference.zones import CITY, Zone, ZoneIndex, generate_zones
from fleetstream.rules import LIMITS, expected_gear_array
from fleetstream.sim.faults import FAULT_TYPES, FaultRates, GroundTruth
from fleetstream.sim.profiles import profile_arrays

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

G = 9.81
AIR_DENSITY = 1.2
ROLLING = 0.012
DRIVELINE_EFFICIENCY = 0.9
BRAKE_MU = 0.9
AMBIENT_C = 20.0
#: tread worn per km (%), times 1 + |acceleration| / 2 (m/s²): about 2 % per 1,000 km, more when driven hard
TYRE_WEAR_PER_KM = 0.002
#: pad worn (%) per metre driven at full brake (pedal 0..1): 1 to 2.5 % per 1,000 km in the simulated
#: traffic (median 1.6), more for drivers who brake harder and with the braking after injected
#: overspeeds (heavy faults: about 2.3); real pads reach 80 % at 30,000 to 70,000 km
BRAKE_WEAR_PER_M = 1.5e-4
DISCIPLINED_MAX_KMH = LIMITS.overspeed_kmh - 1.0  # drivers hold the limit unless an overspeed is injected
OVERSPEED_KMH = (128.0, 152.0)
WRONG_GEAR_MIN_KMH = 10.0
KM_PER_DEG_LAT = 111.32

# Lifecycle states.
PARKED, IDLE_OUT, DRIVING, IDLE_IN = 0, 1, 2, 3
# Roads: (speed limit km/h, share of segments).
ROADS = ((30.0, 0.25), (50.0, 0.35), (80.0, 0.25), (110.0, 0.15))
FAULT = {name: i for i, name in enumerate(FAULT_TYPES)}
FAULT_DURATION_S = {
    "overspeed": (20.0, 60.0),
    "over_rev": (3.0, 8.0),
    "wrong_gear": (5.0, 20.0),
    "overheat": (240.0, 600.0),
    "sensor": (20.0, 60.0),
    "zone": (60.0, 120.0),  # the longest the driver ignores a zone's limit (it ends on leaving the zone)
    "offline": (45.0, 120.0),
}
#: a car's next fault of a type starts at least this long after its last one ended, so that two
#: injected episodes are never one to a rule's lifecycle: longer than the default rules' clear
#: times (30 s at most; overheat's, with the cooling to its clear level, about 75 s)
FAULT_COOLDOWN_S = {"overspeed": 60.0, "over_rev": 60.0, "wrong_gear": 60.0, "overheat": 120.0, "sensor": 60.0,
                     "zone": 60.0, "offline": 60.0}  # fmt: skip
#: a lost connection starts only this long after the car's last fault of any type ended (longer
#: than every default rule's clear time, overheat's with its cooling to the clear level: about 60 s),
#: and after the run's start (so a car has reported before it goes silent)
OFFLINE_CALM_S = 120.0
#: the faults during which the driver does not stop (a stop would split the episode in two)
NO_STOP_FAULTS = ("overspeed", "wrong_gear", "sensor", "zone", "offline")
#: a driver who keeps a speed zone's limit drives at most this far below it inside (times the
#: profile's cruise factor, if under 1), slows down from this many of its response times ahead,
#: and never enters or drives in it faster than the limit less ZONE_CAP_MARGIN_KMH
ZONE_MARGIN_KMH = 2.0
ZONE_LOOKAHEAD_RESPONSES = 3.0
ZONE_CAP_MARGIN_KMH = 1.0
#: a driver ignoring a zone drives this much above its limit (km/h), and the fault starts only
#: where the road's own target is at least ZONE_FAULT_MIN_GAP_KMH above the limit, within
#: ZONE_FAULT_AHEAD_KM of the zone
ZONE_FAULT_EXCESS_KMH = (15.0, 30.0)
ZONE_FAULT_MIN_GAP_KMH = 10.0
ZONE_FAULT_AHEAD_KM = 0.5
#: how far ahead (km) a car looks for the next zone along its street
ZONE_HORIZON_KM = 1.0
#: the oil-temperature sender's noise (°C, one standard deviation; it reports at 0.1 °C). A healthy
#: sender never repeats either of its last two readings (a repeat moves by 0.1 °C), so a run of
#: identical readings is a frozen sender (the ``sensor`` fault) and nothing else, even where one
#: report between two was lost
OIL_NOISE_C = 0.5


FUEL_L_PER_KWH = {"diesel": 0.27, "petrol": 0.32}  # fuel per unit of engine work, full load
IDLE_FUEL_L_PER_H = 0.7


def peak_fuel_rate(model: CarModel) -> float:
    """The most fuel (l/h) a model can report: idle plus the engine's work at its torque limit and
    redline (the drive force never exceeds the torque curve, and the engine never turns faster)."""
    peak_kw = model.max_torque_nm * model.redline_rpm * 2 * math.pi / 60 / 1000
    return IDLE_FUEL_L_PER_H + FUEL_L_PER_KWH[model.fuel] * peak_kw


@dataclass(frozen=True)
class FleetConfig:
    cars: int = 50
    seed: int = 42
    dt: float = 1.0  # simulated seconds per tick
    center_lat: float = CITY[0]  # Tel Aviv (the city the default speed zones lie in)
    center_lon: float = CITY[1]
    radius_km: float = CITY[2]
    faults: FaultRates = field(default_factory=FaultRates)


class Fleet:
    """Vectorised state of every car; :meth:`step` advances one tick and returns the emitted values."""

    def __init__(self, config: FleetConfig, cars: list[Car] | None = None, zones: list[Zone] | None = None) -> None:
        self.config = config
        self.cars = cars if cars is not None else generate_cars(config.cars, config.seed)
        n = self.n = len(self.cars)
        seeds = np.random.SeedSequence([config.seed, 0x51]).spawn(3)
        self.rng = np.random.default_rng(seeds[0])
        self.fault_rng = np.random.default_rng(seeds[1])
        self.noise_rng = np.random.default_rng(seeds[2])
        self.car_ids = [c.car_id for c in self.cars]
        self.ground_truth = GroundTruth()
        self.t = 0.0  # simulated seconds since start
        self._load_models()
        rng = self.rng

        profile_index = np.array([PROFILES.index(c.driver_profile) for c in self.cars], dtype=np.int64)
        self.profile_index = profile_index
        self.driver = profile_arrays(profile_index)

        # Lifecycle: most cars start on the road.
        self.mode = rng.choice([PARKED, DRIVING], size=n, p=[0.2, 0.8]).astype(np.int64)
        self.mode_left = rng.uniform(5, 120, n)
        self.engine_on = self.mode != PARKED
        self.v = np.where(self.mode == DRIVING, rng.uniform(5, 20, n), 0.0)
        self.segment_left = rng.uniform(5, 60, n)
        self.road_limit = rng.choice([r[0] for r in ROADS], size=n)
        self.target_kmh = np.minimum(self.road_limit * self.driver["cruise_factor"], DISCIPLINED_MAX_KMH)
        self.stopping = np.zeros(n, dtype=bool)
        self.grade = rng.uniform(-0.03, 0.03, n)
        self.heading = rng.choice([0.0, 90.0, 180.0, 270.0], size=n)
        angle = rng.uniform(0, 2 * math.pi, n)
        dist = config.radius_km * np.sqrt(rng.uniform(0, 1, n))
        self.lat = config.center_lat + dist * np.cos(angle) / KM_PER_DEG_LAT
        self.lon = config.center_lon + dist * np.sin(angle) / (
            KM_PER_DEG_LAT * math.cos(math.radians(config.center_lat))
        )
        self.gear: I64 = np.zeros(n, dtype=np.int64)
        self.rpm = np.where(self.engine_on, self.idle_rpm, 0.0)
        self.throttle: F64 = np.zeros(n)
        self.brake: F64 = np.zeros(n)
        self.coolant = np.where(self.engine_on, rng.uniform(80, 95, n), AMBIENT_C)
        self.oil = self.coolant + np.where(self.engine_on, 6.0, 0.0)
        self.fuel_l = self.tank_l * rng.uniform(0.3, 1.0, n)
        self.fuel_rate: F64 = np.zeros(n)
        years = np.array([c.year for c in self.cars], dtype=np.float64)
        self.odometer = (2027 - years) * rng.uniform(8_000, 20_000, n)
        self.tyre_wear = rng.uniform(0, 60, n)
        self.brake_wear = rng.uniform(0, 60, n)

        # Live control from driver commands.
        self.manual = np.zeros(n, dtype=bool)
        self.manual_throttle = np.zeros(n)
        self.manual_brake = np.zeros(n)

        # Faults: next scheduled start per (car, type), activity, cause end, parameters.
        self.fault_rates = np.array(config.faults.as_list(), dtype=np.float64)
        self.next_fault = np.full((n, len(FAULT_TYPES)), np.inf)
        for k, rate in enumerate(self.fault_rates):
            if rate > 0:
                self.next_fault[:, k] = self.fault_rng.exponential(3600.0 / rate, n)
        self.fault_active = np.zeros((n, len(FAULT_TYPES)), dtype=bool)
        self.cause_end = np.zeros((n, len(FAULT_TYPES)))
        self.episode_of = np.full((n, len(FAULT_TYPES)), -1, dtype=np.int64)
        self.fault_ended = np.full((n, len(FAULT_TYPES)), -np.inf)
        self.cooldown = np.array([FAULT_COOLDOWN_S[name] for name in FAULT_TYPES])
        self.overspeed_kmh = np.zeros(n)
        self.over_rev_rpm = np.zeros(n)
        self.stuck_oil = np.zeros(n)  # the frozen oil-temperature reading during a sensor fault
        self.oil_frozen: B = np.zeros(n, dtype=bool)
        self.oil_readings: npt.NDArray[np.float64] = np.full((2, n), np.nan)  # the last two oil temperatures reported
        self.gps_jump = np.zeros(n, dtype=bool)
        self._load_zones(generate_zones() if zones is None else zones)
        self.zone_fault_kmh = np.zeros(n)  # the speed a driver ignoring a zone keeps in it
        self.zone_entered = np.zeros(n, dtype=bool)  # the car has been in a zone during its zone fault
        self.zone_faults_implied = 0  # zone faults of cars speeding through a zone in an overspeed fault

    def _load_zones(self, zones: list[Zone]) -> None:
        """The speed zones, and their edges in km east and north of the city's centre (for the
        distance to the next zone along a car's heading)."""
        c = self.config
        self.zones = zones
        self.zone_index = ZoneIndex(zones)
        self.zone_limit = np.array([z.limit_kmh for z in zones] + [np.inf])  # index -1: no zone
        self.km_east = KM_PER_DEG_LAT * math.cos(math.radians(c.center_lat))
        most = max((len(z.lats) for z in zones), default=0)
        edges = np.full((len(zones), most, 4), np.nan)  # (zone, edge, lat_i lon_i lat_j lon_j)
        for k, zone in enumerate(zones):
            edges[k, : len(zone.lats)] = zone.ring()
        scale = np.array([KM_PER_DEG_LAT, self.km_east, KM_PER_DEG_LAT, self.km_east])
        origin = np.array([c.center_lat, c.center_lon, c.center_lat, c.center_lon])
        km = (edges - origin) * scale
        self.zone_edges = (km[..., 0], km[..., 1], km[..., 2], km[..., 3])  # north_i, east_i, north_j, east_j
        box = np.array([z.bbox for z in zones], dtype=np.float64).reshape(-1, 4)
        self.zone_box_km = (box - origin[[0, 0, 1, 1]]) * scale[[0, 0, 1, 1]]  # north lo, hi, east lo, hi
        n = self.n
        self.zone_here = np.full(n, -1, dtype=np.int64)  # the zone a car is in (-1: none)
        self.zone_ahead = np.full(n, -1, dtype=np.int64)  # the next zone along its heading
        self.zone_ahead_km = np.full(n, np.inf)  # ... and how far its edge is

    def _load_models(self) -> None:
        models = model_by_id()
        chosen = [models[c.model_id] for c in self.cars]
        n = len(chosen)
        max_gears = max(m.gears for m in models.values())
        self.model_index = np.array([c.model_id for c in self.cars], dtype=np.int64)
        self.ratios = np.zeros((n, max_gears + 1))  # column 0 = neutral
        self.upshift = np.full((n, max_gears - 1), np.inf)
        for i, (m, car) in enumerate(zip(chosen, self.cars, strict=True)):
            self.ratios[i, 1 : m.gears + 1] = m.gear_ratios
            schedule = m.shift_schedule(car.driver_profile)
            self.upshift[i, : len(schedule)] = schedule
        self.top_gear = np.array([m.gears for m in chosen], dtype=np.int64)
        self.final_drive = np.array([m.final_drive for m in chosen])
        self.radius = np.array([m.tyre_radius_m for m in chosen])
        self.idle_rpm = np.array([m.idle_rpm for m in chosen], dtype=np.float64)
        self.redline = np.array([m.redline_rpm for m in chosen], dtype=np.float64)
        self.max_torque = np.array([m.max_torque_nm for m in chosen])
        self.peak_rpm = np.array([m.peak_torque_rpm for m in chosen], dtype=np.float64)
        self.mass = np.array([m.mass_kg for m in chosen])
        self.drag_area = np.array([m.drag_area_m2 for m in chosen])
        self.max_speed = np.array([m.max_speed_kmh for m in chosen])
        self.tank_l = np.array([m.tank_l for m in chosen])
        self.fuel_l_per_kwh = np.array([FUEL_L_PER_KWH[m.fuel] for m in chosen])
        self.can_over_rev = self.redline > LIMITS.over_rev_rpm + 100

    # --- driver commands -------------------------------------------------------------------
    def command(self, index: int, command: str, value: float | None = None) -> None:
        """Apply a driver command to one car from the next tick on (the others are unaffected)."""
        if command == "start_engine":
            self.engine_on[index] = True
            self.mode[index] = DRIVING
            self.mode_left[index] = 1e9
            self.manual[index] = True
        elif command == "stop_engine":
            self.engine_on[index] = False
            self.manual[index] = True
            self.manual_throttle[index] = 0.0
        elif command == "set_throttle":
            self.manual[index] = True
            self.manual_throttle[index] = float(np.clip(value or 0.0, 0.0, 1.0))
            self.manual_brake[index] = 0.0
        elif command == "set_brake":
            self.manual[index] = True
            self.manual_brake[index] = float(np.clip(value or 0.0, 0.0, 1.0))
            self.manual_throttle[index] = 0.0
        elif command == "release":
            self.manual[index] = False
            self.manual_throttle[index] = 0.0
            self.manual_brake[index] = 0.0
            if self.engine_on[index]:
                self.mode[index] = DRIVING
                self.mode_left[index] = self.rng.uniform(300, 1500)
        else:
            raise ValueError(f"unknown driver command {command!r}")

    # --- one tick ------------------------------------------------------------------------
    def step(self) -> dict[str, np.ndarray]:
        """Advance every car by ``dt``; return the values to emit, one array per field."""
        dt = self.config.dt
        self.t += dt
        self._lifecycle(dt)
        self._roads(dt)
        self._zones()
        self._faults_start()
        self._drive(dt)
        gear, expected = self._gearbox()
        self._engine(gear)
        self._thermal(dt)
        self._position(dt)
        return self._emit(gear, expected)

    def _lifecycle(self, dt: float) -> None:
        """At most one transition per car and tick: parked -> idle -> driving -> stop -> idle -> parked."""
        rng, n = self.rng, self.n
        self.mode_left -= dt
        due = ~self.manual & (self.mode_left <= 0)
        mode = self.mode.copy()  # transitions read the state at the start of the tick
        go = due & (mode == PARKED)
        self.mode[go], self.engine_on[go] = IDLE_OUT, True
        self.mode_left[go] = rng.uniform(3, 10, n)[go]
        leave = due & (mode == IDLE_OUT)
        self.mode[leave] = DRIVING
        self.mode_left[leave] = rng.uniform(300, 1500, n)[leave]
        self.stopping[leave] = False
        # The trip is over: the driver brakes to a stop, idles a few seconds, switches off.
        arrived = due & (mode == DRIVING) & self.stopping & (self.v < 0.3)
        self.stopping |= due & (mode == DRIVING) & ~self._no_stop()
        self.mode[arrived] = IDLE_IN
        self.mode_left[arrived] = rng.uniform(3, 8, n)[arrived]
        off = due & (mode == IDLE_IN)
        self.mode[off], self.engine_on[off] = PARKED, False
        self.stopping[off] = False
        self.mode_left[off] = rng.uniform(20, 150, n)[off]
        refuel = off & (self.fuel_l < 0.15 * self.tank_l)
        self.fuel_l[refuel] = self.tank_l[refuel]

    def _roads(self, dt: float) -> None:
        rng, n = self.rng, self.n
        self.segment_left -= dt
        new = self.segment_left <= 0
        if not new.any():
            return
        limits = rng.choice([r[0] for r in ROADS], size=n, p=[r[1] for r in ROADS])
        stop_here = rng.uniform(0, 1, n) < self.driver["stop_probability"]
        trip_over = (self.mode == DRIVING) & (self.mode_left <= 0)
        self.road_limit[new] = limits[new]
        self.segment_left[new] = np.where(stop_here, rng.uniform(8, 40, n), rng.uniform(20, 120, n))[new]
        # A stop segment (light, junction): target 0 until it ends. The trip's final stop stays.
        self.stopping[new] = (((stop_here & (self.mode == DRIVING)) | trip_over) & ~self._no_stop())[new]
        turn = rng.choice([-90.0, 0.0, 0.0, 90.0], size=n)
        self.heading[new] = np.mod(self.heading + turn, 360.0)[new]
        self.grade[new] = rng.uniform(-0.04, 0.04, n)[new]
        self.target_kmh[new] = np.minimum(
            self.road_limit * self.driver["cruise_factor"] * rng.uniform(0.9, 1.05, n), DISCIPLINED_MAX_KMH
        )[new]

    def _zones(self) -> None:
        """Where each car is: the zone it is in, and the nearest zone edge along its heading within
        ZONE_HORIZON_KM (a car inside a zone sees the edge it will leave by)."""
        self.zone_here[:] = self.zone_index.lookup(self.lat, self.lon)
        self.zone_ahead[:] = -1
        self.zone_ahead_km[:] = np.inf
        if not self.zones:
            return
        c = self.config
        driving = np.flatnonzero(self.mode == DRIVING)
        north = (self.lat[driving] - c.center_lat) * KM_PER_DEG_LAT
        east = (self.lon[driving] - c.center_lon) * self.km_east
        rad = np.radians(self.heading[driving])
        dn, de = np.cos(rad), np.sin(rad)
        # (car, zone) pairs whose boxes meet: the stretch of street ahead, and the zone
        n_lo, n_hi = np.minimum(north, north + ZONE_HORIZON_KM * dn), np.maximum(north, north + ZONE_HORIZON_KM * dn)
        e_lo, e_hi = np.minimum(east, east + ZONE_HORIZON_KM * de), np.maximum(east, east + ZONE_HORIZON_KM * de)
        box = self.zone_box_km
        meet = ((n_lo[:, None] <= box[:, 1]) & (n_hi[:, None] >= box[:, 0])
                & (e_lo[:, None] <= box[:, 3]) & (e_hi[:, None] >= box[:, 2]))  # fmt: skip
        cars, zones = np.nonzero(meet)  # (cars: positions in ``driving``)
        if not len(cars):
            return
        # car + t * heading = edge start + s * edge, by 2-D cross products (x east, y north); a zone's
        # edges padded with NaN to the most any zone has (a NaN edge is never hit)
        n1, e1, n2, e2 = (self.zone_edges[k][zones] for k in range(4))
        cn, ce, hn, he = north[cars, None], east[cars, None], dn[cars, None], de[cars, None]
        en, ee, wn, we = n2 - n1, e2 - e1, n1 - cn, e1 - ce
        denom = he * en - hn * ee
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (we * en - wn * ee) / denom
            along = (we * hn - wn * he) / denom
            hit = (t >= 0) & (t <= ZONE_HORIZON_KM) & (along >= 0) & (along <= 1)
        t = np.where(hit, t, np.inf).min(axis=1)
        order = np.lexsort((t, cars))  # by car, the nearest first
        first = order[np.unique(cars[order], return_index=True)[1]]
        cars, zones, t = driving[cars[first]], zones[first], t[first]
        found = np.isfinite(t)
        self.zone_ahead[cars[found]] = zones[found]
        self.zone_ahead_km[cars[found]] = t[found]

    def _no_stop(self) -> B:
        """Cars in a fault during which their driver does not stop."""
        return np.asarray(self.fault_active[:, [FAULT[name] for name in NO_STOP_FAULTS]].any(axis=1), dtype=bool)

    def _faults_start(self) -> None:
        if not np.isfinite(self.next_fault).any():
            return
        moving_kmh = self.v * 3.6
        cruising = self.engine_on & (self.mode == DRIVING) & ~self.stopping & ~self.manual
        # A lost connection hides what the car does: it starts only on a car with no other fault
        # and none in the last two minutes (whose episode resolves on the reports after it), and no
        # other fault starts during it (each injected episode shows in what is sent).
        silent = self.fault_active[:, FAULT["offline"]]
        calm = ~self.fault_active.any(axis=1) & (
            self.t >= np.maximum(self.fault_ended.max(axis=1), 0.0) + OFFLINE_CALM_S
        )
        eligible = np.stack(
            [
                cruising,  # overspeed
                self.engine_on & (self.v < 0.3) & self.can_over_rev & ~self.manual,  # over_rev
                self.engine_on & (moving_kmh >= WRONG_GEAR_MIN_KMH + 5) & ~self.manual,  # wrong_gear
                self.engine_on.copy(),  # overheat
                cruising,  # sensor
                cruising
                & (self.zone_here < 0)
                & (self.zone_ahead_km <= ZONE_FAULT_AHEAD_KM)
                & (self.target_kmh > self.zone_limit[self.zone_ahead] + ZONE_FAULT_MIN_GAP_KMH),  # zone
                cruising & calm,  # offline
            ],
            axis=1,
        )
        eligible[:, : FAULT["offline"]] &= ~silent[:, None]
        rested = self.t >= self.fault_ended + self.cooldown
        start = (self.t >= self.next_fault) & ~self.fault_active & eligible & rested
        start[:, FAULT["offline"]] &= ~start[:, : FAULT["offline"]].any(axis=1)
        if not start.any():
            return
        rng = self.fault_rng
        t_ms = int(self.t * 1000)
        for i, k in zip(*np.nonzero(start), strict=True):
            name = FAULT_TYPES[k]
            low, high = FAULT_DURATION_S[name]
            self.fault_active[i, k] = True
            self.cause_end[i, k] = self.t + rng.uniform(low, high)
            # From the scheduled time, not the start: waiting for a chance does not lower the rate.
            self.next_fault[i, k] += rng.exponential(3600.0 / self.fault_rates[k])
            self.episode_of[i, k] = self.ground_truth.new_episode(name, self.car_ids[i], t_ms).episode_id
            if name == "overspeed":
                self.overspeed_kmh[i] = rng.uniform(*OVERSPEED_KMH)
            elif name == "over_rev":
                self.over_rev_rpm[i] = rng.uniform(LIMITS.over_rev_rpm + 100, self.redline[i])
            elif name == "zone":
                self.zone_fault_kmh[i] = self.zone_limit[self.zone_ahead[i]] + rng.uniform(*ZONE_FAULT_EXCESS_KMH)
                self.zone_entered[i] = False

    def _drive(self, dt: float) -> None:
        d = self.driver
        v = self.v
        over = self.fault_active[:, FAULT["overspeed"]] & (self.t < self.cause_end[:, FAULT["overspeed"]])
        revving = self.fault_active[:, FAULT["over_rev"]]
        target = np.where(over, self.overspeed_kmh, self.target_kmh)
        # Speed zones: a driver slows down before one and keeps under its limit inside, unless it
        # ignores it (a zone fault; an overspeed fault ignores every limit; a driver in manual control)
        ignoring_zone = self.fault_active[:, FAULT["zone"]] & (self.t < self.cause_end[:, FAULT["zone"]])
        target = np.where(ignoring_zone, np.maximum(target, self.zone_fault_kmh), target)
        heeds = ~(ignoring_zone | over | self.manual)
        here_kmh = self.zone_limit[self.zone_here]  # inf outside every zone
        ahead_kmh = self.zone_limit[self.zone_ahead]
        lookahead_km = (v * ZONE_LOOKAHEAD_RESPONSES * d["response_s"] + 50.0) / 1000.0
        zone_kmh = np.minimum(here_kmh, np.where(self.zone_ahead_km <= lookahead_km, ahead_kmh, np.inf))
        keep_kmh = zone_kmh * np.minimum(d["cruise_factor"], 1.0) - ZONE_MARGIN_KMH
        target = np.where(heeds, np.minimum(target, keep_kmh), target)
        hold_still = self.stopping | (self.mode != DRIVING) | revving | ~self.engine_on
        target_v = np.where(hold_still, 0.0, target / 3.6)

        gear_now = np.clip(self.gear, 1, None)
        ratio = np.take_along_axis(self.ratios, gear_now[:, None], axis=1)[:, 0]
        torque = self._torque(np.maximum(self.rpm, self.idle_rpm))
        f_drive_max = torque * ratio * self.final_drive * DRIVELINE_EFFICIENCY / self.radius
        f_aero = 0.5 * AIR_DENSITY * self.drag_area * v * v
        f_roll = np.where(v > 0.05, ROLLING * self.mass * G, 0.0)
        f_grade = self.mass * G * self.grade
        a_req = np.clip((target_v - v) / d["response_s"], -d["decel_max"], d["accel_max"])
        f_need = self.mass * a_req + f_aero + f_roll + f_grade
        throttle = np.clip(f_need / f_drive_max, 0.0, d["throttle_max"])
        brake = np.clip(-f_need / (BRAKE_MU * self.mass * G), 0.0, 1.0)
        brake = np.where(hold_still & (v < 0.5), np.maximum(brake, 0.3), brake)
        throttle = np.where(self.manual, self.manual_throttle, throttle)
        brake = np.where(self.manual, self.manual_brake, brake)
        throttle = np.where(self.engine_on & ~revving, throttle, 0.0)

        f_brake = brake * BRAKE_MU * self.mass * G
        a = (throttle * f_drive_max - f_aero - f_roll - f_grade - f_brake) / self.mass
        v_new = np.maximum(v + a * dt, 0.0)
        v_new = np.where((v <= 0.05) & (a <= 0), 0.0, v_new)
        cap = np.where(over, self.overspeed_kmh, np.where(self.manual, self.max_speed, DISCIPLINED_MAX_KMH))
        # ...and never enters a zone, or drives in one, above its limit (whatever its response time)
        reach_km = ((v + d["accel_max"] * dt) * dt + 5.0) / 1000.0
        entering_kmh = np.where(self.zone_ahead_km <= reach_km, ahead_kmh, np.inf)
        zone_cap = np.minimum(here_kmh, entering_kmh) - ZONE_CAP_MARGIN_KMH
        cap = np.where(heeds, np.minimum(cap, zone_cap), cap)
        v_new = np.minimum(v_new, np.minimum(cap, self.max_speed) / 3.6)
        self.accel = (v_new - v) / dt
        # What the car reports is what the state holds: speed at 0.01 km/h resolution.
        self.speed_kmh = np.round(v_new * 3.6, 2)
        self.v = self.speed_kmh / 3.6
        self.throttle, self.brake = throttle, brake
        self.power_kw = throttle * f_drive_max * self.v / 1000.0

    def _torque(self, rpm: F64) -> F64:
        shape = 1.0 - 1.2 * ((rpm - self.peak_rpm) / self.redline) ** 2
        return self.max_torque * np.clip(shape, 0.45, 1.0)

    def _gearbox(self) -> tuple[I64, I64]:
        expected = expected_gear_array(self.speed_kmh, self.upshift)
        gear = np.where(self.engine_on, expected, 0)
        wrong = self.fault_active[:, FAULT["wrong_gear"]] & (self.t < self.cause_end[:, FAULT["wrong_gear"]])
        wrong &= self.speed_kmh >= WRONG_GEAR_MIN_KMH
        if wrong.any():
            # Lugging in one gear too high, or (in top gear) one too low if the engine stays in range.
            up = np.minimum(gear + 1, self.top_gear)
            down = np.maximum(gear - 1, 1)
            rpm_down = self._wheel_rpm(down)
            alt = np.where(up != gear, up, np.where(rpm_down <= LIMITS.over_rev_rpm - 300, down, gear))
            gear = np.where(wrong, alt, gear)
        self.gear = gear
        return gear, expected

    def _wheel_rpm(self, gear: I64) -> F64:
        ratio = np.take_along_axis(self.ratios, gear[:, None], axis=1)[:, 0]
        return self.v / (2 * math.pi * self.radius) * 60.0 * ratio * self.final_drive

    def _engine(self, gear: I64) -> None:
        wheel = self._wheel_rpm(gear) * (1.0 + 0.02 * self.throttle)
        rpm = np.where(gear > 0, np.maximum(wheel, self.idle_rpm), self.idle_rpm)
        rpm = rpm + self.noise_rng.normal(0.0, 8.0, self.n)
        revving = self.fault_active[:, FAULT["over_rev"]] & (self.t < self.cause_end[:, FAULT["over_rev"]])
        rpm = np.where(revving, self.over_rev_rpm, rpm)
        rpm = np.minimum(rpm, self.redline)
        self.rpm = np.where(self.engine_on, np.round(rpm), 0.0)
        idle_rate = np.where(self.engine_on, IDLE_FUEL_L_PER_H, 0.0)
        self.fuel_rate = np.where(self.engine_on, idle_rate + self.fuel_l_per_kwh * self.power_kw, 0.0)

    def _thermal(self, dt: float) -> None:
        load = self.throttle * self.rpm / self.redline
        airflow = np.minimum(self.v / 25.0, 1.0)
        heating = self.fault_active[:, FAULT["overheat"]] & (self.t < self.cause_end[:, FAULT["overheat"]])
        target = np.where(self.engine_on, 88.0 + 9.0 * load - 2.0 * airflow, AMBIENT_C)
        target = np.where(heating, 124.0 + 4.0 * load, target)
        self.coolant += (target - self.coolant) * (1.0 - math.exp(-dt / 90.0))
        oil_target = np.where(self.engine_on, self.coolant + 6.0 + 12.0 * load, AMBIENT_C)
        self.oil += (oil_target - self.oil) * (1.0 - math.exp(-dt / 150.0))
        self.fuel_l = np.maximum(self.fuel_l - self.fuel_rate * dt / 3600.0, 0.0)
        km = self.v * dt / 1000.0
        self.odometer += km
        self.tyre_wear = np.minimum(self.tyre_wear + km * TYRE_WEAR_PER_KM * (1.0 + np.abs(self.accel) / 2.0), 100.0)
        self.brake_wear = np.minimum(self.brake_wear + self.brake * self.v * dt * BRAKE_WEAR_PER_M, 100.0)

    def _position(self, dt: float) -> None:
        c = self.config
        km = self.v * dt / 1000.0
        rad = np.radians(self.heading)
        self.lat += km * np.cos(rad) / KM_PER_DEG_LAT
        self.lon += km * np.sin(rad) / (KM_PER_DEG_LAT * np.cos(np.radians(self.lat)))
        north_km = (self.lat - c.center_lat) * KM_PER_DEG_LAT
        east_km = (self.lon - c.center_lon) * KM_PER_DEG_LAT * math.cos(math.radians(c.center_lat))
        outside = north_km**2 + east_km**2 > c.radius_km**2
        # Leaving the city: turn onto the grid street that heads back toward the centre.
        back = np.where(np.abs(north_km) > np.abs(east_km), np.where(north_km > 0, 180.0, 0.0),
                        np.where(east_km > 0, 270.0, 90.0))  # fmt: skip
        self.heading = np.where(outside, back, self.heading)

    def _emit(self, gear: I64, expected: I64) -> dict[str, np.ndarray]:
        coolant = np.round(self.coolant, 1)
        heading = np.mod(self.heading + self.noise_rng.normal(0.0, 0.5, self.n), 360.0)
        sensor = self.fault_active[:, FAULT["sensor"]] & (self.t < self.cause_end[:, FAULT["sensor"]])
        oil = self._oil_reading(sensor)
        frame: dict[str, np.ndarray] = {
            "car_index": np.arange(self.n, dtype=np.int64),
            "speed": self.speed_kmh,
            "rpm": self.rpm.astype(np.int64),
            "gear": gear,
            "lat": np.round(self.lat, 6),
            "lon": np.round(self.lon, 6),
            "heading": np.round(heading, 1),
            "throttle": np.round(self.throttle * 100.0, 1),
            "brake": np.round(self.brake * 100.0, 1),
            "coolant_temp": coolant,
            "oil_temp": oil,
            "fuel_level": np.round(100.0 * self.fuel_l / self.tank_l, 2),
            "fuel_rate": np.round(self.fuel_rate, 2),
            "odometer": np.round(self.odometer, 3),
            "engine_on": self.engine_on.copy(),
            "tyre_wear": np.round(self.tyre_wear, 3),
            "brake_wear": np.round(self.brake_wear, 3),
        }
        # A lost connection: nothing is sent (the runner drops these reports; the car drives on).
        frame["silent"] = self.fault_active[:, FAULT["offline"]] & (self.t < self.cause_end[:, FAULT["offline"]])
        zone = self.zone_index.lookup(frame["lat"], frame["lon"])
        zone_speeding = frame["speed"] > self.zone_limit[zone]
        self._zone_faults(zone, zone_speeding)
        frame["manifest"] = self._manifest(frame, expected, sensor, zone_speeding)
        self._faults_end(frame["manifest"])
        return frame

    def _oil_reading(self, sensor: B) -> F64:
        """The oil temperature each car reports: the sender's noisy reading, never one of its last two,
        except while its sender is frozen (``sensor``): then the reading of the fault's first tick, held."""
        oil = np.round(self.oil + self.noise_rng.normal(0.0, OIL_NOISE_C, self.n), 1)
        for _ in range(3):  # two readings can be in the way at most twice
            oil = np.where((oil == self.oil_readings).any(axis=0), np.round(oil + 0.1, 1), oil)
        freezes = sensor & ~self.oil_frozen
        self.stuck_oil[freezes] = oil[freezes]
        oil = np.where(sensor & self.oil_frozen, self.stuck_oil, oil)
        self.oil_frozen = sensor
        self.oil_readings = np.stack([self.oil_readings[1], oil])
        return np.asarray(oil, dtype=np.float64)

    def _zone_faults(self, zone: I64, speeding: B) -> None:
        """A car in an overspeed fault that speeds through a zone is a zone fault of its own (from its
        first report above the zone's limit; it keeps ignoring the zone until it leaves it). A zone
        fault's cause ends once the car, having been in a zone, is out of it."""
        k = FAULT["zone"]
        implied = np.flatnonzero(speeding & ~self.fault_active[:, k] & self.fault_active[:, FAULT["overspeed"]])
        t_ms = int(self.t * 1000)
        self.zone_faults_implied += len(implied)
        for i in implied:
            self.fault_active[i, k] = True
            self.cause_end[i, k] = self.t + FAULT_DURATION_S["zone"][1]
            self.episode_of[i, k] = self.ground_truth.new_episode("zone", self.car_ids[i], t_ms).episode_id
            self.zone_fault_kmh[i] = self.zone_limit[zone[i]] + self.fault_rng.uniform(*ZONE_FAULT_EXCESS_KMH)
            self.zone_entered[i] = False
        active = self.fault_active[:, k]
        self.zone_entered |= active & (zone >= 0)
        left = active & self.zone_entered & (zone < 0)
        self.cause_end[left, k] = np.minimum(self.cause_end[left, k], self.t)

    def _manifest(self, frame: dict[str, np.ndarray], expected: I64, sensor: B, zone_speeding: B) -> np.ndarray:
        """(cars, fault types): which active fault shows in this tick's emitted values."""
        shows = np.stack(
            [
                frame["speed"] > LIMITS.overspeed_kmh,
                frame["rpm"] > LIMITS.over_rev_rpm,
                frame["gear"] != expected,
                frame["coolant_temp"] > LIMITS.overheat_c,
                sensor,
                zone_speeding,
                frame["silent"],
            ],
            axis=1,
        )
        return shows & self.fault_active

    def _faults_end(self, manifest: np.ndarray) -> None:
        over = self.fault_active & (self.t >= self.cause_end) & ~manifest
        for i, k in zip(*np.nonzero(over), strict=True):
            self.ground_truth.episodes[self.episode_of[i, k]].ended_ms = int(self.t * 1000)
        self.fault_ended[over] = self.t
        self.fault_active &= ~over

    @property
    def driving(self) -> int:
        return int(((self.mode == DRIVING) & (self.v > 0.3)).sum())
