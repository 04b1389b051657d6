"""Rolling-origin backtests of the cost forecast against two baselines, and its speed:
what ``manage.py backtest_forecast`` and ``bench/forecast.py`` run.

Modules: ``datasets`` (the demo generator and Peyton Manning), ``baselines`` (seasonal
naive and Koku's linear forecast), ``runner`` (one origin: fit, forecast, score; the
tuning mode's candidates), ``uncertainty`` (block bootstrap and the perfect model's
coverage), ``report`` (the tables) and ``speed``.

Datasets: the demo generator (``costs.demo``) at each seed, 1,100 days, forecast from
its (provider, service) components like the service does; and, when the file is there,
Prophet's Peyton Manning series (``../shared/data/wp-log-peyton-manning.csv``) turned
into a spend-like series with exp(y) (real data: yearly seasons, regime changes, gaps).

From each origin (the last one 90 + ``--offset`` days before the end, then every
``--spacing`` days back) the model sees only the days up to the origin, exactly as in production
(``fit_forecast`` with its own inner calibration backtests), and is scored on the next
30, 60 and 90 days, with two baselines on the same origins:

* seasonal naive: the last observed week repeated; 80% band from the spread of weekly
  differences, widening with each further week; the total's band adds the daily bounds;
* Koku's linear forecast: ordinary least squares on the last 30 days after dropping
  1.5 IQR outliers, 95% prediction band (clamped at 0); the total's band adds the daily
  bounds.

``--levels 0.8 0.95 0.99`` scores the model's and the seasonal naive's intervals at each
level from the same fits (rows "model, 95%"; Koku's band stays at its own 95%).

Columns: MAPE of daily amounts (days with spend), mean absolute error of the projected
total, empirical coverage of the daily bands and of the total's band (origins whose
holdout has no missing day), against each method's nominal level, each with its
binomial standard error sqrt(p (1 - p) / n). That SE treats the n origins (days) as
independent draws; neighbouring origins share most of their holdout and calibration
history, so the real uncertainty is larger. The total's coverage also gets a 90%
circular block bootstrap interval: the origins of each dataset resampled in runs of a
holdout's length (``block_bootstrap_interval``), still a lower bound on the uncertainty
(it only redraws the origins of the stretch that ran). The model's rows also give what
a perfectly specified model covers on the same origins (``perfect_model_coverage``:
mean and 5th-95th percentile of simulated runs), and each dataset the share of those
runs whose three 80% total cells all fall within 75-85%: a cell outside that range
says something about the model, one inside it does not, however far from the level.

Tuning mode (``--tune``): the candidate rules for choosing the calibration origins
(``TUNE_SHARES`` x ``TUNE_COUNTS`` of ``model._calibration_leads``, and session 2's
fixed leads) are compared on identical fits: each origin is fitted once with the union
of every candidate's calibration origins, and each candidate is scored with only its own
(``Calibration.only``), at the levels ``TUNE_LEVELS``. Same fits, so differences between
candidates are not random draws; the warm starts of the capped calibration fits follow
the union's order, which moves a forecast by well under 0.1%. One table: per candidate,
pooled demo and Peyton Manning coverage, cells outside level +-5 points and the mean
distance from the level. No baselines, no speed.

Speed (unless ``--skip-speed``; ``--origins 0`` runs only this part): the demo's three
providers with 730 days of history in this database, the first forecast of the
organization (fit and calibration, 3 times with the cache cleared) and cached
forecasts, through the service and through the HTTP API. Measure with the load average
under 0.5: on 2 cores, anything else running shows up directly in the first forecast.
"""
